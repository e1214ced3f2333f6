"""Flask's "Background Tasks with Celery" example app, with ``celery`` changed to ``caraway``."""

from flask import Flask

from caraway import Celery, Task


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        CELERY={
            "broker_url": "redis://localhost",
            "result_backend": "redis://localhost",
            "task_ignore_result": True,
        },
        GREETING="Hello from the Flask app",
    )
    app.config.from_prefixed_env()  # FLASK_CELERY__broker_url=... overrides a setting
    celery_init_app(app)

    from . import views

    app.register_blueprint(views.bp)
    return app


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app
