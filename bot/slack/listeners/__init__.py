from ..acks import Listeners
from . import bulk, commands, control, optout, outage, views


def register_listeners(app: Listeners) -> None:
    commands.register(app)
    views.register(app)
    bulk.register(app)
    outage.register(app)
    optout.register(app)
    control.register(app)
