"""tumord watch over HTTP: health, Prometheus metrics, the verdicts API and a web page (docs/http.md)."""
