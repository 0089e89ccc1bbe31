"""The probe engine: drives any backend's cluster through the cells and judges each observation against the spec."""
