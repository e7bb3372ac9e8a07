"""Outbound mail: the smarthost hafen's relay and its alerts send through."""
