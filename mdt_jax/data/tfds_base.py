"""The base of our TFDS builders.

tensorflow-datasets 4.9.10 resolves a builder's `code_path` through an isinstance check against
the `importlib_resources` backport, which it only requires on Python < 3.9; for a builder defined
in a package that import fails. `code_path` here is the file that defines the class, which is what
TFDS itself falls back to. A builder without the abstract methods is not registered by TFDS.
"""
import inspect

from etils import epath
import tensorflow_datasets as tfds


class PackageBuilder(tfds.core.GeneratorBasedBuilder):
  """A GeneratorBasedBuilder whose code path is the file defining it."""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return epath.Path(inspect.getfile(cls))
