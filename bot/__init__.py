"""SMS Ops: a Slack chat-ops bot for international SMS through Alibaba Cloud."""
