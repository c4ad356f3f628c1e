"""Registration: built-in folders, third-party packages through the 'bench' entry-point group, and the errors."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from bench.errors import BenchError
from bench.registry import Registry, make_plugin_manager

THIRD_PARTY = textwrap.dedent('''
    """A third-party plugin: sign of fixed random projections of the first pixels (a package of one module)."""
    import dataclasses

    import torch

    from bench import Method, binarize
    from bench.hookspecs import hookimpl


    class MeanSplit(Method):
        name = "mean-split"
        paper = "third-party example"
        supervision = "none"
        input = "vectors"

        @dataclasses.dataclass(frozen=True)
        class Config:
            scale: float = 1.0  # multiplies the projections; any positive value gives the same codes

        def fit(self, x, y=None, context=None):
            self.mean_ = x.mean(0)
            self.w_ = torch.randn(x.shape[1], self.n_bits, generator=self.generator()).to(x.device)
            return self

        def encode(self, x):
            self.check_fitted("w_")
            return binarize(self.config.scale * (x - self.mean_) @ self.w_)


    @hookimpl
    def bench_methods():
        return [MeanSplit]
''')


def install_fake_package(root, module="thirdparty_hash", source=THIRD_PARTY, entry_name=None):
    """What pip install leaves behind: the module (unless ``source`` is None) and a dist-info declaring the entry
    point ``entry_name = module``."""
    if source is not None:
        (root / f"{module}.py").write_text(source)
    info = root / f"{module.replace('.', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('.', '_')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[bench]\n{entry_name or module} = {module}\n")


def bench(args, pythonpath, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(pythonpath), os.environ.get("PYTHONPATH")])))
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_third_party_plugin_is_listed_and_runs(tmp_path):
    install_fake_package(tmp_path)
    listed = bench(["list"], tmp_path, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "mean-split" in listed.stdout and "thirdparty_hash" in listed.stdout
    ran = bench(
        [
            "run",
            "--method",
            "mean-split",
            "--dataset",
            "digits",
            "--bits",
            "16",
            "--set",
            "scale=2.5",
            "--results",
            str(tmp_path / "res"),
        ],
        tmp_path,
        tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    records = list((tmp_path / "res" / "runs").glob("mean-split_digits_*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["config"] == {"scale": 2.5} and record["metrics"]["map"] > 0.2


def test_broken_plugin_names_its_module(tmp_path):
    install_fake_package(tmp_path, "broken_plugin", "raise RuntimeError('boom')\n")
    out = bench(["list"], tmp_path, tmp_path)
    assert out.returncode == 2
    assert "broken_plugin" in out.stderr and "boom" in out.stderr and "Traceback" not in out.stderr


def test_an_entry_point_to_a_module_already_registered_is_skipped_whatever_its_name(tmp_path):
    """Plugins are registered by module name: an entry point named otherwise than its module (as pip installs of
    this very project declare theirs) must not register the module twice (a duplicate-method error)."""
    install_fake_package(tmp_path, "baselines.itq", source=None, entry_name="itq-alias")
    listed = bench(["list"], tmp_path, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "itq" in listed.stdout


def test_duplicate_names_name_both_modules():
    pm = make_plugin_manager(entry_points=False)

    class Twin:
        @staticmethod
        def bench_methods():
            from baselines.itq import ITQ

            return [ITQ]

    from bench.hookspecs import hookimpl

    Twin.bench_methods = hookimpl(Twin.bench_methods)
    pm.register(Twin, "twin_plugin")
    with pytest.raises(BenchError, match=r"duplicate method 'itq'.*baselines.itq.*twin_plugin"):
        Registry(pm)


def test_builtin_folders_are_scanned():
    pm = make_plugin_manager(entry_points=False)
    names = set(pm.list_name_plugin()[i][0] for i in range(len(pm.list_name_plugin())))
    assert {"baselines.itq", "baselines.lsh", "baselines.pcah", "bench.data", "bench.tables"} <= names
    assert "baselines._linear" not in names  # private helpers are not plugins
