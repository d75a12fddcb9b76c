"""The JSON Schema of the operatord config (config.schema.json), shipped as package data."""
