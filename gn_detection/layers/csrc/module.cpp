// The Python module gn_detection._C. Importing it loads this library, whose
// static initializers register the gn_detection ops with the dispatcher; the
// module itself only reports how the library was built.
#include <Python.h>

namespace {

#ifdef WITH_CUDA
constexpr long kWithCuda = 1;
#else
constexpr long kWithCuda = 0;
#endif

PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "_C",
    "Compiled GroupNorm op of gn_detection (registered as torch.ops.gn_detection).",
    -1,
    nullptr,
};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&module_def);
  if (module != nullptr && PyModule_AddIntConstant(module, "WITH_CUDA", kWithCuda) != 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
