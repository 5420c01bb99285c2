"""The service tests' fixtures (a real `tumord watch` process with a tiny model) for DICOM tests."""
from tests.service.conftest import rng, service  # noqa: F401
