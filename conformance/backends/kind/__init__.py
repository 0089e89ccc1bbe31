"""The kind and kubeconfig backends: real Kubernetes with a real Istio release or custom build."""
