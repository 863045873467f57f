"""DistributedDataParallel on CPU (gloo): two processes hold identical weights and learn as well as one process with
the same budget (epochs and global batch); `torchrun ... run` writes one run folder, from rank 0 only."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from fashion_ensemble.config import ANNConfig, AugmentConfig, TrainConfig
from fashion_ensemble.data.idx import load_raw
from fashion_ensemble.members import build_model
from fashion_ensemble.model.inference import predict_logits
from fashion_ensemble.tools.loadtest import free_port
from fashion_ensemble.training.trainer import to_tensor, train_member

CFG = TrainConfig(epochs=4, batch_size=128, patience=10, augment=AugmentConfig(epochs=0))


def small_split(real_data):
    images, labels = load_raw(real_data, verify_checksums=False)["train"]
    return (images[:4000], labels[:4000]), (images[50000:52000], labels[50000:52000])


def train_once(train, val) -> torch.nn.Module:
    torch.manual_seed(0)
    model, _ = train_member(build_model("ann", ANNConfig(hidden=(128,))), train, val, CFG, seed=0, progress=False)
    return model


def rank_main(rank: int, world: int, port: int, data_dir: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    try:
        model = train_once(*small_split(data_dir))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/rank{rank}.safetensors")
    finally:
        torch.distributed.destroy_process_group()


def accuracy(model, val) -> float:
    return float((predict_logits(model, to_tensor(val[0])).argmax(1).numpy() == val[1]).mean())


@pytest.mark.slow
def test_two_processes_hold_identical_weights_and_learn_as_well_as_one(real_data, tmp_path):
    torch.multiprocessing.spawn(rank_main, args=(2, free_port(), str(real_data), str(tmp_path)), nprocs=2)
    w0, w1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert w0.keys() == w1.keys()
    for key in w0:  # parameters and BatchNorm statistics alike
        assert torch.equal(w0[key], w1[key]), key

    train, val = small_split(real_data)
    single = train_once(train, val)
    ddp = build_model("ann", ANNConfig(hidden=(128,)))
    ddp.load_state_dict(w0)
    acc_single, acc_ddp = accuracy(single, val), accuracy(ddp, val)
    print(f"validation accuracy: one process {acc_single:.4f}, two processes {acc_ddp:.4f}")
    assert acc_single > 0.75 and acc_ddp >= acc_single - 0.02


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="no torchrun")
def test_torchrun_cli_writes_one_run_folder_from_rank_0(tmp_path):
    import json

    from helpers import resume_config, write_dataset

    data = write_dataset(tmp_path / "data", n_train=1000, n_test=100)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(resume_config().to_dict()))
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    r = subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", str(free_port()), "-m",
                        "fashion_ensemble.cli", "run", "--config", str(cfg), "--data-dir", str(data), "--out",
                        str(tmp_path / "runs" / "ddp"), "--device", "cpu", "--quiet"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert os.listdir(tmp_path / "runs") == ["ddp"]  # one folder, no leftovers from rank 1
    assert r.stdout.count("run folder:") == 1  # rank 1 prints nothing
    metrics = json.loads((tmp_path / "runs" / "ddp" / "metrics.json").read_text())
    assert np.isfinite(metrics["models"]["ensemble"]["accuracy"])
