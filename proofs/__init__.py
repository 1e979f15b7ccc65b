"""Derived facts about the spec, checked symbolically and against the oracle.

The fact registry and the bug-zoo witnesses are the subject of issue 3; this
package holds its place in the layout (spec <- oracle <- proofs).
"""
