"""Devices: the ``device`` setting, models and checkpoints moving between devices, tensors following the model.

Without a GPU, files "written on a GPU" are made by tagging every CPU storage
as ``cuda:0`` while saving (what ``torch.save`` records for CUDA tensors), so
loading them on this machine goes through the same path as a real GPU file.
The tests marked ``gpu`` run on CUDA itself and are skipped without it.
"""
import contextlib
import dataclasses
import inspect
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.overrides import TorchFunctionMode

import trade_md
from trade_md.cli import build_parser, main
from trade_md.config import ConfigError, load_yaml
from trade_md.devices import check_device, resolve_device
from trade_md.energy import OpenMMEnergy
from trade_md.generator import BoltzmannGenerator
from trade_md.targets import BoltzmannTarget
from trade_md.testsystems import build_problem
from trade_md.train import OptimConfig, RunConfig, TrainConfig, TransferConfig, _Trainer, train
from trade_md.training_data import TrainingData
from trade_md.workflow import WorkflowConfig

from .test_train import make_config, read_log

REPO = Path(__file__).resolve().parents[1]
TOY_WORKFLOW = REPO / "workflows" / "toy_multiwell.yaml"


@contextlib.contextmanager
def saved_as_on_cuda():
    """Inside, ``torch.save`` records every CPU tensor as stored on ``cuda:0``, as a save on a GPU does."""
    def tag(storage):
        return "cuda:0" if storage.device.type == "cpu" else None

    torch.serialization.register_package(0, tag, lambda storage, location: None)
    try:
        yield
    finally:
        registry = torch.serialization._package_registry
        registry[:] = [entry for entry in registry if entry[1] is not tag]


def assert_needs_cuda_to_load_as_saved(path):
    """The file really says cuda: loading it without ``map_location`` fails on a machine without CUDA."""
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=False)


def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ------------------------------------------------------------------ the setting
@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("cpu", "cpu"), (" CUDA ", "cuda"),
                                             ("cuda:0", "cuda:0"), ("cuda:12", "cuda:12")])
def test_device_names_are_checked_and_normalized(value, expected):
    assert check_device("device", value) == expected


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:-1", "cuda:x", "mps", "", 0, None])
def test_misspelled_devices_are_errors_naming_the_setting(value):
    with pytest.raises(ValueError, match=r"^device must be one of auto, cpu, cuda, cuda:N .*got"):
        check_device("device", value)


def test_auto_is_cuda_when_torch_sees_one_else_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda", 0)
    no_cuda(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")


@pytest.mark.parametrize("value", ["cuda", "cuda:1"])
def test_cuda_without_a_cuda_device_is_a_one_line_error(monkeypatch, value):
    no_cuda(monkeypatch)
    with pytest.raises(ValueError) as err:
        resolve_device(value, "--device")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"--device = '{value}', but torch sees no CUDA device")
    assert "use --device = cpu or auto" in message


def test_cuda_index_past_the_last_device_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"device = 'cuda:2', but torch sees 2 CUDA device\(s\): cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def test_workflows_have_a_device_key(tmp_path):
    assert WorkflowConfig().device == "auto"
    assert WorkflowConfig(device="CUDA:1").device == "cuda:1"
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump({"device": "gpu"}))
    with pytest.raises(ConfigError, match="device must be one of auto, cpu, cuda, cuda:N"):
        load_yaml(WorkflowConfig, path)


@pytest.mark.parametrize("command", ["run", "train", "sample", "evaluate"])
def test_commands_that_run_a_model_take_a_checked_device(command, capsys):
    parser = dict(next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices).choices)[command]
    assert "--device" in parser._option_string_actions
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--device", "gpu"])
    assert exit_.value.code == 2 and "--device must be one of auto, cpu, cuda, cuda:N" in capsys.readouterr().err


def test_workflow_on_cuda_without_one_fails_before_any_stage(tmp_path, monkeypatch, capsys):
    no_cuda(monkeypatch)
    out = tmp_path / "run"
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump({"out_dir": str(out), "device": "cuda", "data": {"train": str(tmp_path / "x.h5")}}))
    for argv in (["run", str(path)], ["run", str(path), "--device", "cuda:0"], ["train", "--config", str(path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "but torch sees no CUDA device" in err and not out.exists()
    # --device replaces the workflow's device: the run gets past it (to the missing data)
    assert main(["run", str(path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "CUDA" not in err and f"reference data {tmp_path / 'x.h5'} not found" in err


def test_sample_on_cuda_without_one_is_a_clear_error_and_cpu_samples(tmp_path, monkeypatch, capsys):
    no_cuda(monkeypatch)
    argv = ["sample", "--model", "ala2", "--temperature", "300", "--n", "8", "--out", str(tmp_path / "s.h5")]
    assert main(argv + ["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trade-md sample: error: --device = 'cuda', but torch sees no CUDA device")
    assert err.count("\n") == 1 and not (tmp_path / "s.h5").exists()
    assert main(argv + ["--device", "cpu"]) == 0 and (tmp_path / "s.h5").exists()


def test_toy_training_refuses_a_gpu_device(tmp_path, capsys):
    assert main(["train", "--config", str(TOY_WORKFLOW), "--out", str(tmp_path / "toy"), "--device", "cuda"]) == 2
    assert "toy problems train on the CPU" in capsys.readouterr().err and not (tmp_path / "toy").exists()


# ------------------------------------------------------------------ files across devices
def small_generator(ala2):
    return BoltzmannGenerator.for_system(ala2, reference_temperature=600.0, flow={"hidden": [16], "bins": 4})


def test_a_model_file_written_on_cuda_loads_on_the_cpu(tmp_path, ala2):
    bg = small_generator(ala2)
    with torch.no_grad():  # parameters away from their initial values, so that loading them is seen
        for p in bg.parameters():
            p.add_(0.01 * torch.randn_like(p))
    with saved_as_on_cuda():
        bg.save(tmp_path / "model.pt")
    assert_needs_cuda_to_load_as_saved(tmp_path / "model.pt")
    loaded = BoltzmannGenerator.load(tmp_path / "model.pt")
    assert all(t.device.type == "cpu" for t in loaded.state_dict().values())
    x = torch.as_tensor(ala2.reference_xyz)[None]
    assert torch.equal(loaded.log_prob(x, 600.0), bg.log_prob(x, 600.0))


def test_a_training_checkpoint_written_on_cuda_resumes_exactly_on_the_cpu(tmp_path):
    """``last.prev.pt`` of a run is its checkpoint at step 20: a run resumed from it equals the whole run."""
    config = make_config("trade_grid", steps=40)
    with saved_as_on_cuda():
        problem = build_problem(config.problem, config.flow)
        train(problem.model, problem.target, problem.data, config, tmp_path / "full")
    assert_needs_cuda_to_load_as_saved(tmp_path / "full" / "last.prev.pt")
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(tmp_path / "full" / "last.prev.pt", resumed / "last.pt")
    shutil.copy(tmp_path / "full" / "log.csv", resumed / "log.csv")
    problem = build_problem(config.problem, config.flow)
    result = train(problem.model, problem.target, problem.data, config, resumed, resume=True)
    assert result.step == 40
    full = torch.load(tmp_path / "full" / "last.pt", map_location="cpu", weights_only=False)["model"]
    for key, value in problem.model.state_dict().items():
        assert torch.equal(value, full[key]), key
    assert read_log(resumed / "log.csv") == read_log(tmp_path / "full" / "log.csv")


# ------------------------------------------------------------------ tensors follow the model
#: Tensors that a training step or sampling creates without a device, on the host on purpose: where -> why.
HOST_TENSORS = {
    ("methods/boundary.py", "loss"): "batch indices drawn with the CPU generator, then moved to the data's device",
    ("methods/trade_grid.py", "grid_gradient_loss"): "grid and pool indices drawn on the host; values move to the model",
    ("methods/trade_grid.py", "causality_weights"): "the grid's host-side float64 table",
    ("guard.py", "is_spike"): "recent losses, Python floats",
    ("energy.py", "forward"): "OpenMM's energies and forces (numpy), moved to the positions' device",
    ("energy.py", "_out"): "OpenMM's results (numpy), moved to the positions' device",
    ("generator.py", "sample"): "the stored float32 positions handed to OpenMM, which computes on the host",
}

_FACTORIES = {"tensor", "as_tensor", "zeros", "ones", "full", "empty", "rand", "randn", "randint", "randperm",
              "arange", "linspace", "logspace", "eye", "scalar_tensor"}
_PACKAGE = Path(trade_md.__file__).resolve().parent


class HostTensors(TorchFunctionMode):
    """Records where in trade_md a tensor is created without a device (so on the CPU whatever the model's)."""

    def __init__(self):
        super().__init__()
        self.places = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        from_tensor = name == "as_tensor" and isinstance(args[0], torch.Tensor)  # keeps that tensor's device
        if name in _FACTORIES and "device" not in kwargs and not from_tensor:
            for frame in inspect.stack()[1:]:
                path = Path(frame.filename).resolve()
                if _PACKAGE in path.parents:
                    self.places.add((path.relative_to(_PACKAGE).as_posix(), frame.function))
                    break
        return func(*args, **kwargs)


def test_the_recorder_sees_a_tensor_made_without_a_device():
    with HostTensors() as recorder:
        trade_md.density.model_like(torch.nn.Module())  # torch.empty(0) for a module without tensors
    assert recorder.places == {("density.py", "model_like")}


@pytest.mark.parametrize("method", ["trade_grid", "trade_continuous", "reweighting", "reverse_kl", "nll"])
def test_training_steps_make_no_tensor_off_the_model_but_the_host_side_ones(tmp_path, method):
    config = make_config(method, steps=8, curriculum=1)
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, spike_window=2))
    problem = build_problem(config.problem, config.flow)
    trainer = _Trainer(problem.model, problem.target, problem.data, config, tmp_path)
    with HostTensors() as recorder:
        for _ in range(6):  # warm-up, ramp, widening, then full steps; the guard compares with recent losses
            trainer.train_step()
        trainer.validate({"event": ""})
    assert recorder.places <= set(HOST_TENSORS), recorder.places - set(HOST_TENSORS)
    assert ("methods/boundary.py", "loss") in recorder.places and ("guard.py", "is_spike") in recorder.places


def test_a_molecular_training_step_and_sampling_make_no_tensor_off_the_model_but_the_host_side_ones(
        tmp_path, ala2, ala2_frames):
    bg = small_generator(ala2)
    energy = OpenMMEnergy(ala2)
    data = TrainingData.split(torch.as_tensor(ala2_frames), 600.0, 0.2)
    config = TrainConfig(
        transfer=TransferConfig(method="trade_grid", condition_range=(400.0, 700.0), warmup_steps=1, ramp_steps=1,
                                widen_steps=1, grid_size=3, snis_samples=8, refresh_every=2),
        optim=OptimConfig(steps=6, batch_size=8), run=RunConfig(progress=False))
    trainer = _Trainer(bg.density, BoltzmannTarget(energy.energy), data, config, tmp_path)
    with HostTensors() as recorder:
        for _ in range(4):
            trainer.train_step()
        samples = bg.sample(16, np.array([300.0] * 8 + [500.0] * 8))
    assert recorder.places <= set(HOST_TENSORS), recorder.places - set(HOST_TENSORS)
    assert energy.stats.n_evaluations > 0 and ("methods/trade_grid.py", "grid_gradient_loss") in recorder.places
    assert len(samples) == 16 and np.isfinite(samples.log_prob).all()


# ------------------------------------------------------------------ on a GPU
@pytest.mark.gpu
def test_training_resumes_on_cuda_from_a_cpu_checkpoint_and_the_model_loads_back_on_the_cpu(tmp_path):
    config = make_config("trade_grid", steps=40)
    problem = build_problem(config.problem, config.flow)
    train(problem.model, problem.target, problem.data, config, tmp_path / "cpu")
    resumed = tmp_path / "cuda"
    resumed.mkdir()
    shutil.copy(tmp_path / "cpu" / "last.prev.pt", resumed / "last.pt")  # the CPU run at step 20
    shutil.copy(tmp_path / "cpu" / "log.csv", resumed / "log.csv")
    problem = build_problem(config.problem, config.flow)
    model = problem.model.to("cuda")
    result = train(model, problem.target, problem.data, config, resumed, resume=True)
    assert result.step == 40 and len(read_log(resumed / "log.csv")) == 40
    assert all(p.is_cuda and bool(torch.isfinite(p).all()) for p in model.parameters())
    x, log_p = model.sample(64, 1.0)
    assert x.is_cuda and bool(torch.isfinite(log_p).all())
    state = torch.load(resumed / "last.pt", map_location="cpu", weights_only=False)
    cpu_model = build_problem(config.problem, config.flow).model
    cpu_model.load_state_dict(state["model"])
    torch.testing.assert_close(cpu_model.log_prob(x.cpu(), 1.0), log_p.cpu(), rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_a_generator_samples_on_cuda_and_its_file_loads_on_the_cpu(tmp_path, ala2):
    bg = small_generator(ala2).to("cuda")
    samples = bg.sample(256, 450.0)
    assert len(samples) == 256 and np.isfinite(samples.log_prob).all() and np.isfinite(samples.energies).any()
    bg.save(tmp_path / "model.pt")
    loaded = BoltzmannGenerator.load(tmp_path / "model.pt")
    x = torch.as_tensor(samples.xyz[:32], dtype=torch.float64)
    torch.testing.assert_close(loaded.log_prob(x, 450.0), bg.log_prob(x.cuda(), 450.0).cpu(), rtol=1e-6, atol=1e-6)


def test_under_torchrun_cuda_means_the_ranks_own_gpu():
    from trade_md.devices import rank_device
    from trade_md.distributed import World

    cpu = torch.device("cpu")
    assert rank_device(cpu, World(1, 2, 1)) == cpu
    assert rank_device(torch.device("cuda", 0), World()) == torch.device("cuda", 0)  # one process: as given
    if torch.cuda.device_count() < 2:
        with pytest.raises(ValueError, match="LOCAL_RANK=1, but torch sees"):
            rank_device(torch.device("cuda", 0), World(1, 2, 1))


def test_openmm_follows_the_models_gpu():
    from trade_md.devices import openmm_device_properties

    assert openmm_device_properties("CUDA", torch.device("cuda", 1)) == {"DeviceIndex": "1"}
    assert openmm_device_properties("CUDA", torch.device("cuda")) == {"DeviceIndex": "0"}
    assert openmm_device_properties("CUDA", torch.device("cpu")) == {}
    for platform in ("OpenCL", "CPU", "Reference"):
        assert openmm_device_properties(platform, torch.device("cuda", 1)) == {}


@pytest.mark.gpu
def test_cuda_energies_on_the_models_gpu_match_the_reference_platform(ala2, ala2_frames):
    from trade_md.devices import openmm_device_properties

    x = ala2_frames[:16]
    gpu = OpenMMEnergy(ala2, platform="CUDA", properties=openmm_device_properties("CUDA", torch.device("cuda", 0)))
    assert gpu.properties["DeviceIndex"] == "0"
    ref = OpenMMEnergy(ala2, platform="Reference")
    assert np.allclose(gpu.energy(x), ref.energy(x), atol=1e-2)  # mixed precision, kJ/mol
