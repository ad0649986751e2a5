"""nbgrader settings shared by every user's server on the course hub.

deploy/jupyterhub_config.py puts this folder on each server's JUPYTER_CONFIG_PATH, so nbgrader's
JupyterLab extensions (Assignments, Formgrader, Validate) find the course and the exchange.
On a hand-made deployment you may instead copy it to /etc/jupyter/nbgrader_config.py.
"""

import os

c = get_config()  # noqa: F821 (provided by traitlets)

c.CourseDirectory.course_id = os.environ.get("CVCOURSE_COURSE_ID", "cvcourse-week3")
c.Exchange.root = os.environ.get("CVCOURSE_EXCHANGE", "/srv/nbgrader/exchange")
