"""`ctl top`: every host as bars, like htop for the cluster.

    pk-host1  ready  cpu [██████▒▒▒▒·········]  1.75/2   used 0.5
                     mem [███▒▒▒▒▒···········]  453Mi/2Gi  used 120Mi

█ measured use, ▒ reserved but not used (overhead included), · free. Use beyond the reservation is
drawn in full and flagged with "!".
"""
from __future__ import annotations

from packyard.quantity import format_bytes, format_cpu
from packyard.v1 import scheduler_pb2

USED, RESERVED, FREE = "█", "▒", "·"


def bar(capacity: float, allocated: float, used: float, width: int = 24) -> str:
    if capacity <= 0:
        return FREE * width
    used_cells = min(width, round(width * used / capacity))
    reserved_cells = min(width, round(width * allocated / capacity))
    cells = USED * used_cells + RESERVED * max(0, reserved_cells - used_cells)
    return cells + FREE * (width - len(cells))


def node_json(n: scheduler_pb2.Node) -> dict:
    def share(part: float, whole: float) -> float:
        return round(part / whole, 4) if whole else 0.0
    cpu = (n.capacity.cpu_milli / 1000, n.allocated.cpu_milli / 1000, n.usage.cpu_milli / 1000)
    mem = (n.capacity.memory_bytes, n.allocated.memory_bytes, n.usage.memory_bytes)
    return {"name": n.name, "state": n.state, "instances": n.instances,
            "cpu": {"capacity": cpu[0], "allocated": cpu[1], "usage": cpu[2],
                    "allocated_share": share(cpu[1], cpu[0]), "usage_share": share(cpu[2], cpu[0])},
            "memory": {"capacity": mem[0], "allocated": mem[1], "usage": mem[2],
                       "allocated_share": share(mem[1], mem[0]), "usage_share": share(mem[2], mem[0])}}


def render(nodes: list[scheduler_pb2.Node], width: int = 24) -> str:
    if not nodes:
        return "no nodes"
    name_w = max(len(n.name) for n in nodes)
    lines = [f"{'NODE'.ljust(name_w)}  STATE  {USED} used  {RESERVED} reserved  {FREE} free"]
    totals = [0.0] * 6
    for n in nodes:
        c, m = n.capacity, n.allocated
        u = n.usage
        flag_cpu = " !" if u.cpu_milli > m.cpu_milli else ""
        flag_mem = " !" if u.memory_bytes > m.memory_bytes else ""
        lines.append(f"{n.name.ljust(name_w)}  {n.state.ljust(5)}  cpu [{bar(c.cpu_milli, m.cpu_milli, u.cpu_milli, width)}]"
                     f"  {format_cpu(m.cpu_milli)}/{format_cpu(c.cpu_milli)}  used {format_cpu(u.cpu_milli)}{flag_cpu}"
                     f"  ({n.instances} instances)")
        lines.append(f"{' ' * name_w}         mem [{bar(c.memory_bytes, m.memory_bytes, u.memory_bytes, width)}]"
                     f"  {format_bytes(m.memory_bytes)}/{format_bytes(c.memory_bytes)}"
                     f"  used {format_bytes(u.memory_bytes)}{flag_mem}")
        if n.state == "ready":
            for i, v in enumerate((c.cpu_milli, m.cpu_milli, u.cpu_milli, c.memory_bytes, m.memory_bytes,
                                   u.memory_bytes)):
                totals[i] += v
    lines.append(f"{'cluster'.ljust(name_w)}         cpu {format_cpu(totals[1])}/{format_cpu(totals[0])} reserved,"
                 f" {format_cpu(totals[2])} used;  mem {format_bytes(totals[4])}/{format_bytes(totals[3])} reserved,"
                 f" {format_bytes(totals[5])} used")
    return "\n".join(lines)
