-- Run once, when PostgreSQL's data volume is first set up: the database of the second exporter
-- replica (exporter-b in docker-compose.yml). Each replica keeps its own last-seen state.
CREATE DATABASE vmhealth_exporter_b OWNER vmhealth;
