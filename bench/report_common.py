"""report_common.py: the helpers the report writers of bench/run.sh share (row selection,
medians, number formats). Imported by the Python blocks embedded in run.sh."""
import statistics


def selector(rows):
    """sel(**kw): the result rows whose fields equal every keyword given."""
    def sel(**kw):
        return [r for r in rows if all(r.get(k) == v for k, v in kw.items())]
    return sel


def med(xs):
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.median(xs) if xs else None


def fi(x):
    return "—" if x is None else f"{x:,.0f}"


def f2(x):
    return "—" if x is None else f"{x:.2f}"


def f3(x):
    return "—" if x is None else f"{x:.3f}"
