"""lambdagate's Python runtime, the code that runs INSIDE a sandbox.

Standard library only (it runs in the function's interpreter next to the user's modules):
``zygote`` is the preloaded parent of a function's instances, ``confine`` the system calls that
sandbox them, ``client`` the Runtime API loop that calls ``module.function(event, context)``.
"""
