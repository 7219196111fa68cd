"""Issue 13, the core layer: YAML refusals, OS errors and SIGTERM as one line, temporaries and file modes, spacing.

Each test here failed on main before the fix it names.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import subprocess
import sys
import time

import pytest

from ivus_tf.core import atomic
from ivus_tf.core.config import from_mapping, load_yaml
from ivus_tf.core.errors import InputError, run_cli


@dataclasses.dataclass(frozen=True)
class Small:
    name: str = "a"
    count: int = 1


# ------------------------------------------------------------------------------------------- 2: YAML refusals

def test_yaml_alias_bomb_is_refused_at_once_with_its_line(tmp_path):
    levels = ['  - &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 6):  # 9**6 strings once expanded: main quoted them all in its error message
        prev, name = chr(96 + i), chr(97 + i)
        levels.append(f"  - &{name} [{', '.join(['*' + prev] * 9)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("name:\n" + "\n".join(levels) + "\n")
    start = time.perf_counter()
    with pytest.raises(InputError) as error:
        load_yaml(Small, path)
    assert time.perf_counter() - start < 2
    message = str(error.value)
    assert message.startswith(f"{path} line 2: YAML anchors and aliases") and len(message) < 300


def test_yaml_duplicate_key_names_key_and_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: x\ncount: 2\nname: y\n")
    with pytest.raises(InputError, match=r"dup.yaml line 3: key 'name' appears twice \(first on line 1\)"):
        load_yaml(Small, path)


def test_config_errors_quote_at_most_80_characters():
    with pytest.raises(InputError) as error:
        from_mapping(Small, {"count": ["x" * 10_000]}, "cfg")
    assert len(str(error.value)) < 160 and "..." in str(error.value)
    with pytest.raises(InputError) as error:
        from_mapping(Small, {"y" * 10_000: 1}, "cfg")
    assert len(str(error.value)) < 200


def test_train_set_refuses_yaml_aliases():
    from ivus_tf.train import build_parser, overrides_from_args

    args = build_parser().parse_args(["--set", "aspp_rates=&a [1, 2]"])
    with pytest.raises(InputError, match="--set 'aspp_rates=&a \\[1, 2\\]' line 1: YAML anchors and aliases"):
        overrides_from_args(args)


# ------------------------------------------------------------------------------------ 7: OS errors, one line

@pytest.mark.parametrize("error, words", [
    (PermissionError(errno.EACCES, "Permission denied", "/data/out"), "/data/out: Permission denied"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x"), "/mnt/ro/x: Read-only file system"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/a/file/b"), "/a/file/b: Not a directory"),
    (FileExistsError(errno.EEXIST, "File exists", "/a/b"), "/a/b: File exists"),
])
def test_run_cli_maps_os_errors_to_one_line_naming_the_path(error, words, capsys):
    def main(argv):
        raise error

    assert run_cli(main, []) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {words}") and err.count("\n") == 1 and "Traceback" not in err


# ------------------------------------------------------------------------- 11: SIGTERM, stale temporaries

SIGTERM_SCRIPT = """
import os, signal, sys, time
from pathlib import Path
from ivus_tf.core.atomic import atomic_output_dir
from ivus_tf.core.errors import run_cli

def main(argv):
    with atomic_output_dir(Path(sys.argv[1]) / "out") as tmp:
        (tmp / "half.txt").write_text("half")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    return 0

previous = signal.getsignal(signal.SIGTERM)
code = run_cli(main, [])
assert signal.getsignal(signal.SIGTERM) == previous, "handler not restored"
sys.exit(code)
"""


def test_sigterm_is_an_interrupt_that_cleans_up_and_exits_143(tmp_path):
    done = subprocess.run([sys.executable, "-c", SIGTERM_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip() == "error: terminated (SIGTERM); nothing half-written was kept"
    assert list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_temporaries_of_dead_processes_are_removed_by_the_next_write(tmp_path):
    dead = _dead_pid()
    tag = atomic.temp_tag(dead)
    stale_dir = tmp_path / f".out.tmp-{tag}-abcd1234"
    stale_old = tmp_path / f".out.old-{tag}-abcd1234"
    stale_file = tmp_path / f".tmp-{tag}-abcd1234-a.json"
    alive_dir = tmp_path / f".out.tmp-{atomic.temp_tag(os.getpid())}-keep0000"  # a writer still at work
    other = tmp_path / ".out.tmp-zzzzzz-1-keep"  # not of our naming: left alone
    for folder in (stale_dir, stale_old, alive_dir, other):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "x.bin").write_bytes(b"x" * 100)
    stale_file.write_text("{}")
    with atomic.atomic_output_dir(tmp_path / "out") as tmp:
        (tmp / "done").write_text("1")
    atomic.atomic_write_text(tmp_path / "a.json", "{}")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["out", "a.json", alive_dir.name, other.name])


def test_temporaries_carry_the_pid(tmp_path):
    with atomic.atomic_output_dir(tmp_path / "out") as tmp:
        assert tmp.name.startswith(f".out.tmp-{atomic.temp_tag(os.getpid())}-")
    with atomic.atomic_file(tmp_path / "f.txt") as tmp:
        assert tmp.name.startswith(f".tmp-{atomic.temp_tag(os.getpid())}-") and tmp.name.endswith("-f.txt")
        tmp.write_text("x")


def test_overwrite_says_where_the_old_folder_is_when_it_cannot_be_deleted(tmp_path, monkeypatch, capsys):
    out = tmp_path / "rec"
    out.mkdir()
    (out / "index.json").write_text("{}")
    monkeypatch.setattr(atomic.shutil, "rmtree", lambda path, *a, **k: None)  # deleting fails silently
    with atomic.atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "index.json").write_text("{}")
    err = capsys.readouterr().err
    old = [p for p in tmp_path.iterdir() if p.name.startswith(".rec.old-")]
    assert len(old) == 1 and err.startswith(f"warning: could not delete the replaced {out} (moved to {old[0]}")


# ---------------------------------------------------------------------------------------- 12: respect umask

def test_outputs_respect_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        with atomic.atomic_output_dir(tmp_path / "out") as tmp:
            (tmp / "x.txt").write_text("x")
        atomic.atomic_write_text(tmp_path / "f.json", "{}")
        assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
        assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o027)
        atomic.atomic_write_text(tmp_path / "g.json", "{}")
        assert (tmp_path / "g.json").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)


# ------------------------------------------------------------------------------- 10: pixel spacing range

@pytest.mark.parametrize("value", [1e-50, 1e39, 1e-4, 5.0, float("nan"), 0, -0.02, "abc"])
def test_pixel_spacing_outside_the_physical_range_is_refused(value):
    from ivus_tf.core.errors import check_pixel_spacing_mm

    with pytest.raises(InputError, match=r"where: pixel_spacing_mm .* must be a finite number of mm per pixel "
                                         r"between 0.001 and 1$"):
        check_pixel_spacing_mm(value, "where: pixel_spacing_mm")


def test_pixel_spacing_inside_the_range_is_its_float32_value():
    from ivus_tf.core.errors import check_pixel_spacing_mm

    assert check_pixel_spacing_mm("0.02", "s") == pytest.approx(0.02)
    assert check_pixel_spacing_mm(1.0, "s") == 1.0
