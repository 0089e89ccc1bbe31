"""The world the suite deploys: its pods, ports, Services and manifests, and the echo workload they run."""
