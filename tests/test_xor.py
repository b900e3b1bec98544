"""examples/xor.py: both tutorial networks reach 100% accuracy with hand-written gradients."""

import importlib.util


def test_xor_example_learns(repo_root):
    spec = importlib.util.spec_from_file_location("xor_example", repo_root / "examples" / "xor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    accuracies = module.main(verbose=False)
    assert len(accuracies) == 2
    assert all(acc == 1.0 for acc in accuracies.values()), accuracies
