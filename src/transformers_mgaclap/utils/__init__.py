"""Helpers of the project's command lines (`cli`): the parsers' conventions and the start-up check of optional
dependencies."""
