"""A torn checkpoint is impossible: kill -9 the writer mid-write, the target is the old complete
file (or absent), loadable, and nothing half-written carries the final name."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from hydra_jobs import compose_job

from detr_lightning.checkpointing.atomic_io import (
    AtomicCheckpointIO,
    atomic_torch_save,
    remove_abandoned_temp_files,
)

# Runs AtomicCheckpointIO.save_checkpoint (what Lightning calls) on two targets at once, with a
# torch.save that writes half of the real bytes, flushes, announces it and then hangs forever.
_WRITER = textwrap.dedent(
    """
    import io, sys, threading, time, torch
    from detr_lightning.checkpointing.atomic_io import AtomicCheckpointIO
    real_save = torch.save
    def torn_save(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        sys.stdout.write("HALF\\n")  # one write: the two threads must not interleave
        sys.stdout.flush()
        time.sleep(3600)
    torch.save = torn_save
    io_plugin = AtomicCheckpointIO()
    new = {"state_dict": {"w": torch.full((200_000,), 2.0)}, "global_step": 2}
    for target in sys.argv[1:]:
        threading.Thread(target=io_plugin.save_checkpoint, args=(new, target), daemon=True).start()
    time.sleep(3600)
    """
)


def _kill_mid_write(targets: list[str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, *targets], stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        halves = 0
        while halves < len(targets):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "writer exited early"
            halves += line.count("HALF")
            assert time.monotonic() < deadline, "writer never reached the middle of the write"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()


def test_kill_9_mid_write_leaves_the_old_file_or_none(tmp_path) -> None:
    existing, fresh = tmp_path / "ckpt" / "last.ckpt", tmp_path / "ckpt" / "epoch001.ckpt"
    old = {"state_dict": {"w": torch.full((200_000,), 1.0)}, "global_step": 1}
    atomic_torch_save(old, existing)
    before = existing.read_bytes()

    _kill_mid_write([str(existing), str(fresh)])

    assert existing.read_bytes() == before  # the old complete file, untouched
    loaded = torch.load(existing, weights_only=True)
    assert loaded["global_step"] == 1 and torch.equal(
        loaded["state_dict"]["w"], old["state_dict"]["w"]
    )
    assert not fresh.exists()  # absent, not torn
    leftovers = sorted(p.name for p in existing.parent.iterdir() if p.name.endswith(".tmp"))
    assert len(leftovers) == 2 and all(p.startswith(".") for p in leftovers)  # hidden temp files
    # The next save of a target removes what the killed writer left for that target.
    atomic_torch_save(old, existing)
    other = [p for p in leftovers if p.startswith(".epoch001.ckpt.")]
    assert len(other) == 1
    assert sorted(os.listdir(existing.parent)) == sorted([*other, "last.ckpt"])
    # A resume clears the folder of temp files idle for 10 minutes (a live write is not idle),
    # and nothing else: not a checkpoint, not a hidden .tmp file of another name.
    (existing.parent / ".notes.tmp").write_text("mine")
    ten_min_ago = time.time() - 601
    os.utime(existing.parent / ".notes.tmp", (ten_min_ago, ten_min_ago))
    assert remove_abandoned_temp_files(existing.parent) == []
    os.utime(existing.parent / other[0], (ten_min_ago, ten_min_ago))
    assert remove_abandoned_temp_files(existing.parent) == [str(existing.parent / other[0])]
    assert sorted(os.listdir(existing.parent)) == [".notes.tmp", "last.ckpt"]


def test_save_replaces_whole_file_with_normal_permissions(tmp_path) -> None:
    target = tmp_path / "a" / "b.ckpt"
    AtomicCheckpointIO().save_checkpoint({"x": torch.ones(3)}, target)
    AtomicCheckpointIO().save_checkpoint({"x": torch.zeros(3)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["x"], torch.zeros(3))
    assert os.listdir(target.parent) == ["b.ckpt"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() would create it


def test_failed_write_keeps_the_target_and_removes_the_temp_file(tmp_path) -> None:
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"x": 1}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full (simulated)")

    # torch's zip writer reports a full disk as a RuntimeError ("unexpected pos ..."): the
    # message names the file, the free space and that the previous file is intact
    with pytest.raises(OSError, match=r"last.ckpt: writing failed \(disk full \(simulated\)\); "
                                      r"\d+ MiB free .* previous file, if any, is unchanged"):  # fmt: skip
        atomic_torch_save({"x": Unpicklable()}, target)
    assert torch.load(target, weights_only=True) == {"x": 1}
    assert os.listdir(tmp_path) == ["last.ckpt"]


@pytest.mark.parametrize("trainer_cfg", ["cpu", "ddp_cpu"])
def test_every_trainer_config_writes_atomically(tmp_path, trainer_cfg: str) -> None:
    from detr_lightning.utils.build import build_trainer

    cfg = compose_job([f"trainer={trainer_cfg}", "logger=none"], tmp_path)
    trainer = build_trainer(cfg)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def _refuse(code: int):
    def mkstemp(*args, dir: str, **kwargs):  # what the OS says, naming the temp file
        raise OSError(code, os.strerror(code), os.path.join(dir, ".last.ckpt.abcd1234.tmp"))

    return mkstemp


def test_a_read_only_folder_is_named_with_a_writable_fix(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    target = folder / "last.ckpt"
    if os.geteuid() == 0:  # root writes through chmod 0o555: simulate a read-only filesystem
        monkeypatch.setattr("tempfile.mkstemp", _refuse(errno.EROFS))
    else:
        folder.chmod(0o555)
    try:
        with pytest.raises(OSError) as err:
            atomic_torch_save({"x": 1}, target)
    finally:
        folder.chmod(0o755)
    msg = str(err.value)
    assert msg.startswith(f"{target}: writing failed (") and ".tmp" not in msg
    assert f"its folder {folder} is not writable" in msg and "free" not in msg
    assert "Fix: make it writable, or write elsewhere: a writable hydra.run.dir=" in msg


def test_a_full_disk_or_quota_says_free_space(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("tempfile.mkstemp", _refuse(errno.EDQUOT))
    with pytest.raises(OSError, match=r"last.ckpt: writing failed \(Disk quota exceeded\); \d+ "
                                      r"MiB free .*\(out of space or over quota\)\. .* Fix: free "
                                      r"space there"):  # fmt: skip
        atomic_torch_save({"x": 1}, tmp_path / "last.ckpt")


def test_a_file_size_limit_is_named_as_such_not_as_a_full_disk(tmp_path) -> None:
    """EFBIG (``ulimit -f``, a scheduler's RLIMIT_FSIZE): torch reports it as "unexpected pos";
    the message gives the OSError's reason and the limit's fix, not "free space"."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))  # Python ignores SIGXFSZ: EFBIG
    try:
        with pytest.raises(OSError) as err:
            atomic_torch_save({"w": torch.zeros(1_000_000)}, tmp_path / "last.ckpt")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'last.ckpt'}: writing failed (File too large)"), msg
    assert "ulimit -f unlimited" in msg and "free space there" not in msg, msg
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temp file left
