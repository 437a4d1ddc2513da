"""Example apps (``streamtask worker examples.order_fulfillment:app``)."""
