from slack_bolt.async_app import AsyncApp

from . import bulk, commands, control, optout, outage, views


def register_listeners(app: AsyncApp) -> None:
    commands.register(app)
    views.register(app)
    bulk.register(app)
    outage.register(app)
    optout.register(app)
    control.register(app)
