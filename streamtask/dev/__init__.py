"""Out of the runtime path: the local broker and cluster (and their throwaway TLS
certificates), benchmarks and the demo."""
