"""The documentation: links and anchors that resolve, and vocabularies that match the code."""
