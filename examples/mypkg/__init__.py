"""A user's own package: l1sweep imports it only because examples/conf/own_model.yaml allows it."""
