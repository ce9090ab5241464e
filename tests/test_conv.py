"""Convolution and max-pooling against plain loop references, and their gradients."""
import numpy as np
import pytest

import tinydan as td
from tinydan.ops.conv import col2im_array, im2col_array
from tinydan.testing import check_grad

pytestmark = pytest.mark.conv

rng = np.random.default_rng(7)


def conv_reference(x, w, b, stride, padding):
    """out[n,f,i,j] = sum_{c,u,v} w[f,c,u,v] x[n,c,i*s+u,j*s+v] + b[f], with explicit loops."""
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, f, oh, ow))
    for a in range(n):
        for o in range(f):
            for i in range(oh):
                for j in range(ow):
                    patch = x[a, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
                    out[a, o, i, j] = (patch * w[o]).sum() + (b[o] if b is not None else 0)
    return out


def pool_reference(x, k, s):
    n, c, h, w = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    out = np.zeros((n, c, oh, ow))
    for a in range(n):
        for o in range(c):
            for i in range(oh):
                for j in range(ow):
                    out[a, o, i, j] = x[a, o, i * s:i * s + k, j * s:j * s + k].max()
    return out


@pytest.mark.parametrize("shape,wshape,stride,padding", [
    ((2, 1, 10, 10), (8, 1, 2, 2), 1, 0),      # the DAN's first conv
    ((2, 8, 9, 9), (4, 8, 2, 2), 1, 0),        # its second
    ((1, 1, 28, 28), (8, 1, 3, 3), 1, 1),      # the input DAN layer
    ((3, 2, 7, 6), (3, 2, 3, 2), 2, 1),
])
def test_conv2d_matches_loop_reference(shape, wshape, stride, padding):
    x, w, b = rng.standard_normal(shape), rng.standard_normal(wshape), rng.standard_normal(wshape[0])
    out = td.conv2d(td.tensor(x), td.tensor(w), td.tensor(b), stride=stride, padding=padding)
    assert np.allclose(out.data, conv_reference(x, w, b, stride, padding))


@pytest.mark.parametrize("shape,k,s", [((2, 4, 9, 9), 3, 1), ((1, 2, 8, 8), 2, 2), ((2, 1, 7, 5), 3, 2)])
def test_max_pool_matches_loop_reference(shape, k, s):
    x = rng.standard_normal(shape)
    assert np.allclose(td.max_pool2d(td.tensor(x), k, s).data, pool_reference(x, k, s))


def test_im2col_col2im_are_adjoint():
    """<im2col(x), y> == <x, col2im(y)> for random x, y: col2im is the transpose of im2col."""
    x = rng.standard_normal((2, 3, 6, 5))
    for kh, kw, s in [(2, 2, 1), (3, 2, 2), (3, 3, 1)]:
        cols = im2col_array(x, kh, kw, s)
        y = rng.standard_normal(cols.shape)
        assert np.isclose((cols * y).sum(), (x * col2im_array(y, x.shape, kh, kw, s)).sum())


def test_conv2d_second_order():
    check_grad(lambda x, w, b: td.tanh(td.conv2d(x, w, b, stride=1, padding=1)),
               rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((3, 2, 2, 2)),
               rng.standard_normal(3))
    check_grad(lambda x, w: td.conv2d(x, w, stride=2) ** 2,
               rng.standard_normal((2, 1, 5, 5)), rng.standard_normal((2, 1, 3, 3)))


def test_max_pool_second_order():
    check_grad(lambda x: td.max_pool2d(x * x, 3, 1) ** 2, rng.standard_normal((2, 2, 5, 5)))
    check_grad(lambda x: td.max_pool2d(td.tanh(x), 2, 2), rng.standard_normal((1, 3, 4, 6)))


def test_conv_dan_pipeline_gradient():
    """conv -> leaky relu -> conv -> leaky relu -> max-pool, as in the UCIL DAN."""
    def f(x, w1, w2):
        h = td.leaky_relu(td.conv2d(x, w1), 0.1)
        h = td.leaky_relu(td.conv2d(h, w2), 0.1)
        return td.max_pool2d(h, 3, 1)
    check_grad(f, rng.standard_normal((2, 1, 6, 6)), rng.standard_normal((3, 1, 2, 2)),
               rng.standard_normal((2, 3, 2, 2)))


def test_conv_errors_are_clear():
    with pytest.raises(ValueError, match="expects input"):
        td.conv2d(td.tensor(np.ones((3, 10, 10))), td.tensor(np.ones((8, 1, 2, 2))))
    with pytest.raises(ValueError, match="input has 2 channels but the weight expects 1"):
        td.conv2d(td.tensor(np.ones((1, 2, 10, 10))), td.tensor(np.ones((8, 1, 2, 2))))
    with pytest.raises(ValueError, match="does not fit"):
        td.im2col(td.tensor(np.ones((1, 1, 2, 2))), 3, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_and_pool_keep_the_dtype(dtype):
    x = td.tensor(rng.standard_normal((2, 1, 5, 5)), dtype=dtype, requires_grad=True)
    w = td.tensor(rng.standard_normal((3, 1, 2, 2)), dtype=dtype, requires_grad=True)
    y = td.max_pool2d(td.conv2d(x, w, padding=1), 2, 1)
    assert y.dtype == dtype
    gx, gw = td.grad(y.sum(), [x, w])
    assert gx.dtype == dtype and gw.dtype == dtype
