"""The agent (agent/): collection, exposition, push and fan-out, identity, the installers, real agent processes."""
