"""Coverage-guided in-process fuzzing of the three services (atheris): `make fuzz`."""
