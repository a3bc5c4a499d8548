"""``flame compare A B``: the compute multiplier of fitted study A over B, with its interval."""

from analysis.compare.multiplier import COMPARE_DIR, compare, load_study, write_comparison

__all__ = ["write_comparison", "load_study", "compare", "COMPARE_DIR"]
