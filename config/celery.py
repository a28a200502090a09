import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("crossgrade")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def close_old_database_connections(task=None, **kwargs) -> None:
    """Workers keep their connection across tasks (CELERY_DB_REUSE_MAX), so apply CONN_MAX_AGE and the health
    check here, as Django does around each request: a connection broken by a database restart is dropped.
    Not for a task run eagerly inside the caller's transaction (the caller owns that connection)."""
    if task is not None and task.request.is_eager:
        return
    from django.db import close_old_connections

    close_old_connections()
