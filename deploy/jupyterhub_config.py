"""JupyterHub configuration for one cvcourse class on one server (a starting point).

- Users log in with their system accounts (PAM) and get a JupyterLab server each
  (LocalProcessSpawner: every user runs as their own OS user, which nbgrader's exchange needs).
- Two groups: `instructors` and `students`. Everyone sees nbgrader's *Assignments* tab; only
  instructors get the *Formgrader*, *Create Assignment* and *Courses* tools (students' servers read
  `deploy/student-config/`, which turns those off).
- The nbgrader exchange lives in `/srv/nbgrader/exchange` (create it world-writable with the sticky
  bit: `install -d -m 1777 /srv/nbgrader/exchange`).

Edit the lists below, then: `jupyterhub -f deploy/jupyterhub_config.py`.
The test suite (tests/test_hub.py) loads this file and overrides only what a test needs
(dummy login, loopback ports, temporary folders). For Kubernetes, see the Instructors page.
"""

import os
from pathlib import Path

c = get_config()  # noqa: F821 (provided by JupyterHub)

HERE = Path(__file__).resolve().parent
COURSE_ID = "cvcourse-week3"
EXCHANGE = os.environ.get("CVCOURSE_EXCHANGE", "/srv/nbgrader/exchange")
INSTRUCTORS = {"instructor"}
STUDENTS = {"student1", "student2"}

c.JupyterHub.bind_url = "http://127.0.0.1:8000"
c.Authenticator.allowed_users = INSTRUCTORS | STUDENTS
c.Authenticator.admin_users = set(INSTRUCTORS)
c.JupyterHub.load_groups = {
    "instructors": {"users": sorted(INSTRUCTORS)},
    "students": {"users": sorted(STUDENTS)},
}
c.Spawner.default_url = "/lab"
c.Spawner.cmd = ["jupyterhub-singleuser"]
# Every user's server reads deploy/nbgrader_config.py (course id, exchange), which reads these.
c.Spawner.environment = {
    "CVCOURSE_EXCHANGE": EXCHANGE,
    "CVCOURSE_COURSE_ID": COURSE_ID,
    "JUPYTER_CONFIG_PATH": str(HERE),
}
c.Spawner.args = [
    # nbgrader's formgrader is shown inside JupyterLab in an iframe
    "--ServerApp.tornado_settings={'headers': {'Content-Security-Policy': \"frame-ancestors 'self'\"}}",
]


def _per_group_setup(spawner):
    """Students: nbgrader's instructor tools off (server extension and lab plugins)."""
    groups = {group.name for group in spawner.user.groups}
    if "instructors" not in groups:
        paths = [str(HERE / "student-config"), spawner.environment.get("JUPYTER_CONFIG_PATH", "")]
        spawner.environment = dict(spawner.environment, JUPYTER_CONFIG_PATH=os.pathsep.join(p for p in paths if p))


c.Spawner.pre_spawn_hook = _per_group_setup
