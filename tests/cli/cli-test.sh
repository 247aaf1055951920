#!/usr/bin/env bash
# Command-line contract tests: placeholder until the CLI lands.
exit 0
