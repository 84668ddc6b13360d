"""Site profiles ship inside the package (an installed wheel has them), and
a site's own profile is a path."""
import subprocess
import sys
import zipfile

from conftest import ROOT
from synscale.backends.profile import load_profile


def test_an_installed_wheel_finds_the_shipped_profile(tmp_path):
    """Build the wheel, unpack it away from the checkout and load "local"
    from there: the profile is package data, not a file of the repository."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "wheel"), str(ROOT)], check=True, timeout=300)
    (wheel,) = (tmp_path / "wheel").glob("synscale-*.whl")
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    code = ("from synscale.backends.profile import load_profile\n"
            "p, problems = load_profile('local', 'study.toml')\n"
            "assert not problems, problems\n"
            "print(p.path, p.partition)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
                       timeout=120)
    assert r.returncode == 0, r.stderr
    path, partition = r.stdout.split()
    assert path == str(tmp_path / "site/synscale/profiles/local.toml") and partition == "debug"


def test_a_site_profile_is_a_path_and_an_unknown_name_says_what_is_allowed(tmp_path):
    (tmp_path / "site.toml").write_text('partition = "gpu"\nmax_gpus_per_node = 8\n')
    study = str(tmp_path / "study.toml")
    profile, problems = load_profile("site.toml", study)
    assert not problems and profile.partition == "gpu" and profile.max_gpus_per_node == 8
    profile, problems = load_profile("nope", study)
    assert profile is None and len(problems) == 1
    assert "backend.profile = 'nope'" in problems[0] and "local" in problems[0] \
        and "path to a site's .toml file" in problems[0]
