"""How fast and how good the zoo is: the HTTP load generator, the generation benchmarks and the depth-study report.

These measure the other packages from outside (cli → measure → exports/server/trainer → zoo); nothing serves or
trains through them."""
