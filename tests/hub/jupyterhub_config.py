"""The course hub of deploy/jupyterhub_config.py, overridden only where a test must (tests/test_hub.py).

Dummy login with one password, every user's server as the test's own OS user (so each student's
server states its nbgrader student id), loopback ports and temporary folders from the environment.
"""

import os
from pathlib import Path

c = get_config()  # noqa: F821
REPO = Path(__file__).resolve().parents[2]
load_subconfig(str(REPO / "deploy" / "jupyterhub_config.py"))  # noqa: F821

TMP = Path(os.environ["CVCOURSE_HUB_TMP"])
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = os.environ["CVCOURSE_HUB_PASSWORD"]
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = str(TMP / "home" / "{username}")
c.Spawner.cmd = [str(REPO / ".venv" / "bin" / "jupyterhub-singleuser")]
c.Spawner.args = list(c.Spawner.args) + ["--allow-root"] * (os.geteuid() == 0)
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.Spawner.environment = dict(c.Spawner.environment, CVCOURSE_EXCHANGE=os.environ["CVCOURSE_EXCHANGE"],
                             PATH=str(REPO / ".venv" / "bin") + os.pathsep + os.environ["PATH"])
c.JupyterHub.bind_url = f"http://127.0.0.1:{os.environ['CVCOURSE_HUB_PORT']}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{os.environ['CVCOURSE_HUB_API_PORT']}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{os.environ['CVCOURSE_PROXY_API_PORT']}"
c.ConfigurableHTTPProxy.command = [str(REPO / ".tools" / "node_modules" / ".bin" / "configurable-http-proxy")]
c.ConfigurableHTTPProxy.pid_file = str(TMP / "proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{TMP / 'hub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(TMP / "cookie_secret")
c.JupyterHub.pid_file = str(TMP / "hub.pid")

_deploy_hook = c.Spawner.pre_spawn_hook


def _test_hook(spawner):
    """All servers run as one OS user here: tell nbgrader who the student is."""
    _deploy_hook(spawner)
    home = Path(spawner.home_dir)
    home.mkdir(parents=True, exist_ok=True)
    (home / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.student_id = {spawner.user.name!r}\n"
    )


c.Spawner.pre_spawn_hook = _test_hook
