"""Scripts `labeljob train` ships to SageMaker as a source directory; they run inside its containers."""
