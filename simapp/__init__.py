"""simapp: similarity learning in production (Django project package).

The Celery app lives in ``simapp.celery`` and is imported by the code that sends or runs tasks, not here:
importing it here would pull Django into every import of the Django-free cores ``simapp.learning`` and
``simapp.vectors``. ``celery -A simapp`` finds ``simapp.celery`` by itself.
"""
