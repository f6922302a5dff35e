"""The import graph of dmml_tf runs down the layers its package docstring names, with
no cycle."""

import ast
from pathlib import Path

import dmml_tf

PACKAGE = Path(dmml_tf.__file__).parent


def stated_layers():
    """{top-level module: layer index, 0 at the top} from the docstring's `a -> b` line."""
    line = next(line for line in dmml_tf.__doc__.splitlines() if "->" in line)
    return {name.strip(): depth for depth, layer in enumerate(line.split("->"))
            for name in layer.split(",")}


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph():
    """{module: set of dmml_tf modules it imports}, `from a import b` resolved to a.b
    where a.b is a module."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.startswith("dmml_tf")}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dmml_tf"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    imported.add(full if full in modules else node.module)
        graph[name] = imported - {name}
    return graph


def layer_of(module, layers):
    return layers[module.split(".")[1]]


def upward_imports(graph, layers):
    """`module imports target` for every import into a higher layer."""
    return [f"{module} imports {target}" for module, targets in graph.items()
            if module != "dmml_tf"  # the public API re-exports from every layer
            for target in targets if target != "dmml_tf"
            and layer_of(target, layers) < layer_of(module, layers)]


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return [*path, module, target]
            if target not in state and (cycle := visit(target, [*path, module])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [])):
            return cycle
    return None


def test_every_module_belongs_to_a_stated_layer():
    layers = stated_layers()
    tops = {module.split(".")[1] for module in import_graph() if module != "dmml_tf"}
    assert tops <= set(layers), f"modules in no stated layer: {sorted(tops - set(layers))}"


def test_imports_never_run_up_a_layer():
    assert upward_imports(import_graph(), stated_layers()) == []


def test_no_import_cycle():
    graph = {m: t - {"dmml_tf"} for m, t in import_graph().items() if m != "dmml_tf"}
    assert find_cycle(graph) is None


def test_the_checks_catch_an_upward_import_and_a_cycle():
    graph = {"dmml_tf.data.views": {"dmml_tf.training.dm2"}, "dmml_tf.training.dm2": set()}
    assert upward_imports(graph, stated_layers()) == [
        "dmml_tf.data.views imports dmml_tf.training.dm2"]
    cyclic = {"dmml_tf.losses.a": {"dmml_tf.losses.b"}, "dmml_tf.losses.b": {"dmml_tf.losses.a"}}
    assert find_cycle(cyclic) == ["dmml_tf.losses.a", "dmml_tf.losses.b", "dmml_tf.losses.a"]
