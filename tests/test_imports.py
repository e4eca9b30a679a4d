"""Import hygiene: ``import trade_md`` stays light; lazily loaded names still work."""
import subprocess
import sys


def test_import_trade_md_does_not_import_matplotlib():
    code = "import trade_md, sys; assert 'matplotlib' not in sys.modules, 'matplotlib was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lazy_names_resolve_to_the_real_objects():
    code = ("import trade_md, sys\n"
            "from trade_md.analysis.evaluate import evaluate\n"
            "assert trade_md.evaluate is evaluate and 'evaluate' in dir(trade_md)\n"
            "assert callable(trade_md.simulate) and trade_md.MolecularSystem.__name__ == 'MolecularSystem'\n"
            "import trade_md.simulate\n"
            "assert callable(trade_md.simulate), 'importing the submodule must not hide the function'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
