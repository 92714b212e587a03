"""What several test folders use: stacks, servers, files. Nothing here is collected as a test."""
