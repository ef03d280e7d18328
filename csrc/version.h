/*
 * version.h - p2prpc's version, written here and nowhere else.
 *
 * The engine reports it (GET /v1/health, p2prpc._core.__version__), Python
 * takes it from the engine (p2prpc.__version__), and setup.py reads this line
 * for the package metadata (pyproject.toml declares the version dynamic). A C
 * header is the one place every build sees without a flag to pass (setup.py,
 * the Makefile's test build, the fuzz build), and changing it rebuilds what
 * uses it through the ordinary header dependencies.
 */
#ifndef PRPC_VERSION_H
#define PRPC_VERSION_H

#define PRPC_VERSION "0.1.0"

#endif
