"""The Flask + balloons email demo: ``POST /send`` queues an email on its own machine.

Importing this package imports nothing else, so a job machine that imports
``examples.flask_email.tasks`` never loads Flask.
"""
