"""What every stage shares and none owns: usage errors, file writing, devices, memory, the command-line arguments."""
