// Python bindings for worldenv._native.
#include <pybind11/pybind11.h>

#include <omp.h>

namespace py = pybind11;

PYBIND11_MODULE(_native, m) {
  m.doc() = "worldenv native CPU kernels (C++17, OpenMP)";
  m.def("max_threads", []() { return omp_get_max_threads(); },
        "Number of OpenMP threads the kernels use by default.");
}
