"""Pure logic of the warehouse sink: buffering records per partition and cutting them into files."""
