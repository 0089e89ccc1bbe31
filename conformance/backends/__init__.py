"""The backends a conformance run can use, behind one interface (`conformance.backends.base.Cluster`)."""
