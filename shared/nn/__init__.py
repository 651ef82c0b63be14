"""Neural-network building blocks written by hand (the curriculum's core), each tested against a library reference."""
