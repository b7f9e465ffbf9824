"""Structure that keeps the package readable: no import cycles, one home for the results columns."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aerobust"
SCHEMA_NAMES = {"RESULT_COLUMNS", "KEY_COLUMNS", "INTEGER_COLUMNS", "FLOAT_COLUMNS", "CLEAN_COLUMNS",
                "SETTING_COLUMNS", "IDENTITY_COLUMNS", "METRICS_BY_COLUMN"}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported(module: str, path: Path, node: ast.AST) -> list[str]:
    """Module names an import statement may load: the module itself and, for ``from M import n``, M.n."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[:len(package) - node.level + 1] if node.level else []
    source = ".".join(base + ([node.module] if node.module else []))
    return [source] + [f"{source}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """Edges between the package's modules from every import statement, function-level ones included."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        graph[module] = {target for node in ast.walk(ast.parse(path.read_text()))
                         if isinstance(node, (ast.Import, ast.ImportFrom))
                         for target in _imported(module, path, node) if target in modules and target != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path of modules (first == last), or None; depth-first search with colours."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles_and_none_where_there_is_none():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    # the graph reads relative and function-level imports
    graph = import_graph()
    assert "aerobust.attacks.problem" in graph["aerobust.attacks.optimizers"]
    assert "aerobust.metrics" in graph["aerobust.attacks.sanity"]  # `from ..metrics import ...` inside a function


def test_no_import_cycle_inside_the_package():
    assert find_cycle(import_graph()) is None


def test_the_attack_contract_imports_no_sibling():
    siblings = {m for m in _modules() if m.startswith("aerobust.attacks")}
    assert not import_graph()["aerobust.attacks.problem"] & siblings


def test_the_results_columns_are_defined_once():
    homes = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) else []
            for target in targets:
                if isinstance(target, ast.Name) and target.id in SCHEMA_NAMES:
                    homes.setdefault(target.id, []).append(path.relative_to(PACKAGE.parent).as_posix())
    assert homes == {name: ["aerobust/results.py"] for name in SCHEMA_NAMES}


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph between rooms: top-level modules, and each subpackage as one room."""
    def room(module: str) -> str:
        return ".".join(module.split(".")[:2])

    rooms: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if module == "aerobust":
            continue
        rooms.setdefault(room(module), set()).update(room(t) for t in targets if room(t) not in (room(module), "aerobust"))
    return rooms


def floors(rooms: dict[str, set[str]]) -> dict[str, int]:
    """Each room's floor: 1 for a room that imports none of the others, else one above its highest import."""
    found: dict[str, int] = {}

    def floor(room: str) -> int:
        if room not in found:
            found[room] = 1 + max((floor(target) for target in rooms[room]), default=0)
        return found[room]

    for room in rooms:
        floor(room)
    return found


def test_the_floor_count_follows_the_longest_chain_of_imports():
    assert floors({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"c"}}) == {"a": 3, "b": 2, "c": 1, "d": 2}
    assert room_graph({"aerobust.x.y": {"aerobust.x.z", "aerobust.w"}, "aerobust.x.z": set(), "aerobust.w": set()}) \
        == {"aerobust.x": {"aerobust.w"}, "aerobust.w": set()}


def test_rooms_import_one_way_on_at_most_twelve_floors():
    # No arrow runs back up: a subpackage is one room, so no module of it may import a room that imports it.
    rooms = room_graph(import_graph())
    assert find_cycle(rooms) is None
    assert max(floors(rooms).values()) <= 12


def test_the_lowest_rooms_import_nothing_above_them():
    rooms = room_graph(import_graph())
    # torchrun's world and gathers, the output-folder layout, and the audit's store sit under every report
    assert rooms["aerobust.distributed"] <= {"aerobust.errors"}
    assert "aerobust.report" not in rooms["aerobust.audit"] and "aerobust.records" not in rooms["aerobust.audit"]
    assert "aerobust.training" not in rooms["aerobust.report"]
