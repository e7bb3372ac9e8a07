"""The reconcile loop, the operation runner and the control-plane process."""
