"""Launch files, checked without ROS launch: lightweight fakes of ``launch``/``launch_ros`` record the actions.

``launch`` and ``launch_ros`` are not installable from PyPI, so each launch file imports them only inside
``generate_launch_description()``. The fakes below expose only real API names (a typo in a launch file
fails here) and record constructor arguments; the tests then check the executables are console scripts
of setup.py, the parameter files exist and parse as ROS parameter files, and the remappings.
"""
from __future__ import annotations

import ast
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
LAUNCH_DIR = REPO / 'launch'
LAUNCH_FILES = ('robot.launch.py', 'replay.launch.py', 'demo.launch.py')


class Recorded:
    """Stands in for a launch class: keeps its constructor arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __repr__(self):
        return f'{type(self).__name__}({self.args}, {self.kwargs})'


class FakeDeclareLaunchArgument(Recorded):
    def __init__(self, name, default_value=None, description='', choices=None, **kwargs):
        super().__init__(name, default_value=default_value, description=description, choices=choices, **kwargs)
        self.name, self.default_value = name, default_value
        if choices is not None and default_value is not None and default_value not in choices:
            raise ValueError(f'default {default_value!r} of {name} not in choices {choices}')  # as launch does


class FakeLaunchConfiguration(Recorded):
    def __init__(self, variable_name, default=None):
        super().__init__(variable_name, default=default)
        self.variable_name = variable_name

    def perform(self, context):
        return context.launch_configurations[self.variable_name]


class FakeLaunchDescription(Recorded):
    def __init__(self, initial_entities=None, **kwargs):
        super().__init__(initial_entities, **kwargs)
        self.entities = list(initial_entities or [])


class FakeLifecycleNode(Recorded):
    def __init__(self, *, name, namespace, **kwargs):   # launch_ros requires both keywords
        super().__init__(name=name, namespace=namespace, **kwargs)


def _module(name, **attrs):
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


def _recorded(*names):
    return {n: type(n, (Recorded,), {}) for n in names}


def fake_launch_modules() -> dict[str, types.ModuleType]:
    """``sys.modules`` entries for the parts of launch / launch_ros the project's launch files use."""
    actions = _recorded('EmitEvent', 'RegisterEventHandler', 'OpaqueFunction', 'ExecuteProcess',
                        'IncludeLaunchDescription', 'GroupAction', 'LogInfo', 'SetEnvironmentVariable',
                        'Shutdown')
    actions['DeclareLaunchArgument'] = FakeDeclareLaunchArgument
    return {
        'launch': _module('launch', LaunchDescription=FakeLaunchDescription),
        'launch.actions': _module('launch.actions', **actions),
        'launch.substitutions': _module('launch.substitutions', LaunchConfiguration=FakeLaunchConfiguration,
                                        **_recorded('PathJoinSubstitution', 'TextSubstitution')),
        'launch.events': _module('launch.events', matches_action=lambda action: ('matches', action)),
        'launch.event_handlers': _module('launch.event_handlers', **_recorded('OnProcessExit', 'OnProcessStart')),
        'launch.conditions': _module('launch.conditions', **_recorded('IfCondition', 'UnlessCondition')),
        'launch.launch_description_sources': _module('launch.launch_description_sources',
                                                     **_recorded('PythonLaunchDescriptionSource')),
        'launch_ros': _module('launch_ros'),
        'launch_ros.actions': _module('launch_ros.actions', LifecycleNode=FakeLifecycleNode,
                                      **_recorded('Node', 'PushRosNamespace', 'SetParameter')),
        'launch_ros.event_handlers': _module('launch_ros.event_handlers', **_recorded('OnStateTransition')),
        'launch_ros.events': _module('launch_ros.events'),
        'launch_ros.events.lifecycle': _module('launch_ros.events.lifecycle', **_recorded('ChangeState')),
    }


@pytest.fixture
def fake_launch(monkeypatch):
    for name, module in fake_launch_modules().items():
        monkeypatch.setitem(sys.modules, name, module)


def load_launch_file(path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f'launch_file_{path.stem.replace(".", "_")}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeContext:
    def __init__(self, launch_configurations, is_shutdown=False):
        self.launch_configurations = dict(launch_configurations)
        self.is_shutdown = is_shutdown


def console_scripts() -> dict[str, str]:
    """``name -> module:function`` of setup.py's console_scripts, read with ast (setup.py is not run)."""
    scripts = {}
    for node in ast.walk(ast.parse((REPO / 'setup.py').read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and ' = ' in node.value \
                and ':' in node.value:
            name, target = (s.strip() for s in node.value.split('=', 1))
            scripts[name] = target
    return scripts


def _of(entities, cls_name):
    return [e for e in entities if type(e).__name__ == cls_name]


def declared_defaults(entities) -> dict[str, str | None]:
    return {e.name: e.default_value for e in entities if isinstance(e, FakeDeclareLaunchArgument)}


def expand(entities, configurations: dict[str, str]):
    """Run OpaqueFunctions and includes the way launch would, returning the flat list of actions."""
    out = []
    for entity in entities:
        name = type(entity).__name__
        if name == 'OpaqueFunction':
            out += expand(entity.kwargs['function'](FakeContext(configurations)), configurations)
        elif name == 'IncludeLaunchDescription':
            source = entity.args[0]
            path = Path(source.args[0])
            assert path.is_file(), f'included launch file {path} does not exist'
            child = load_launch_file(path).generate_launch_description().entities
            passed = {k: resolve(v, configurations) for k, v in entity.kwargs.get('launch_arguments', ())}
            child_conf = {**declared_defaults(child), **configurations, **passed}
            out += expand(child, child_conf)
        else:
            out.append(entity)
    return out


def resolve(value, configurations):
    """A substitution (or a list of them, concatenated as launch does) as the string launch would use."""
    if isinstance(value, FakeLaunchConfiguration):
        return value.perform(FakeContext(configurations))
    if isinstance(value, list) and value and any(isinstance(v, FakeLaunchConfiguration) for v in value):
        return ''.join(resolve(v, configurations) for v in value)
    return value


def describe(value, configurations, _seen=None):
    """A comparable picture of what launch would do: entities with their arguments, substitutions resolved."""
    _seen = set() if _seen is None else _seen
    value = resolve(value, configurations)
    if isinstance(value, Recorded):
        if id(value) in _seen:                     # a handler pointing back at its node
            return ('ref', type(value).__name__)
        _seen = _seen | {id(value)}
        return (type(value).__name__, describe(list(value.args), configurations, _seen),
                describe(value.kwargs, configurations, _seen))
    if isinstance(value, dict):
        return tuple(sorted((k, describe(v, configurations, _seen)) for k, v in value.items()))
    if isinstance(value, (list, tuple)) or type(value).__name__ in ('dict_items', 'generator'):
        return tuple(describe(v, configurations, _seen) for v in value)
    return repr(value)


def handlers(actions, kind):
    """The event handlers of type ``kind`` (e.g. ``OnProcessExit``) registered among ``actions``."""
    return [h.args[0] for h in _of(actions, 'RegisterEventHandler') if type(h.args[0]).__name__ == kind]


def assert_shuts_down_on_exit(actions, target):
    """launch ends (``Shutdown``) when the process ``target`` exits."""
    matching = [h for h in handlers(actions, 'OnProcessExit') if h.kwargs['target_action'] is target]
    assert len(matching) == 1, f'no OnProcessExit handler for {target}'
    on_exit = matching[0].kwargs['on_exit']
    assert [type(a).__name__ for a in on_exit(None, FakeContext({}))] == ['Shutdown']
    # a second Shutdown while launch already shuts down makes launch_ros raise: only the first exit ends it
    assert on_exit(None, FakeContext({}, is_shutdown=True)) is None


def assert_valid_node(node, scripts):
    package, executable = node.kwargs['package'], node.kwargs['executable']
    assert package == 'av_snn_ros'
    assert executable in scripts, f'{executable} is not a console script of setup.py'
    module = scripts[executable].split(':')[0]
    assert (REPO / (module.replace('.', '/') + '.py')).is_file(), f'{module} (for {executable}) does not exist'


def _flatten(tree: dict, prefix: str = '') -> set[str]:
    names = set()
    for key, value in tree.items():
        name = f'{prefix}{key}'
        names |= _flatten(value, name + '.') if isinstance(value, dict) else {name}
    return names


#: parameters every rclpy node declares itself
RCLPY_PARAMETERS = {'use_sim_time'}


def declared_parameters(node_name: str) -> set[str]:
    """Parameter names the node with ``node_name`` declares (from its spec table)."""
    if node_name == 'av_classifier':
        from av_snn_ros.ros.params import param_specs
        return {spec.name for spec in param_specs()}
    from av_snn_ros.ros import camera_node, microphone_node
    module = {'camera': camera_node, 'microphone': microphone_node}[node_name]
    return {spec.name for spec in module.SPECS}


def assert_params_file(path: str, node_name: str):
    """The file exists in config/, has a section for the node, and sets only parameters it declares."""
    path = Path(path)
    assert path.is_file(), f'parameter file {path} does not exist'
    assert path.parent == REPO / 'config'
    data = yaml.safe_load(path.read_text())
    # a section applies by exact name (root namespace only) or by wildcard (any namespace)
    matching = [k for k in data if k in (node_name, f'/{node_name}', f'/**/{node_name}', '/**')]
    assert matching, f'{path} has no section for node {node_name} (keys {list(data)})'
    for key in matching:
        names = _flatten(data[key]['ros__parameters'])
        unknown = names - declared_parameters(node_name) - RCLPY_PARAMETERS
        assert not unknown, f'{path}: {node_name} does not declare {sorted(unknown)}'


def assert_section_applies(path: str, namespace: str, node_name: str):
    """A node launched in ``namespace`` still gets the file's section (exact names match the root only)."""
    fqn = f"/{namespace.strip('/')}/{node_name}" if namespace.strip('/') else f'/{node_name}'
    keys = set(yaml.safe_load(Path(path).read_text()))
    accepted = {fqn, f'/**/{node_name}', '/**'} | ({node_name} if fqn == f'/{node_name}' else set())
    assert keys & accepted, f'{path}: no section applies to {fqn} (keys {sorted(keys)})'


# ----------------------------------------------------------------------------------------- tests

@pytest.mark.parametrize('filename', LAUNCH_FILES)
def test_launch_files_import_without_ros(filename, monkeypatch):
    """Importing a launch file never needs launch/launch_ros (they exist only on ROS installs)."""
    for name in ('launch', 'launch_ros'):
        monkeypatch.setitem(sys.modules, name, None)      # any import of them raises ImportError
    module = load_launch_file(LAUNCH_DIR / filename)
    with pytest.raises(ImportError):
        module.generate_launch_description()


def test_robot_launch_defaults(fake_launch):
    entities = load_launch_file(LAUNCH_DIR / 'robot.launch.py').generate_launch_description().entities
    defaults = declared_defaults(entities)
    assert {'params_file', 'namespace', 'image_topic', 'audio_topic', 'model_card', 'backend',
            'autostart'} <= set(defaults)
    actions = expand(entities, defaults)
    (node,) = _of(actions, 'FakeLifecycleNode')
    assert_valid_node(node, console_scripts())
    assert node.kwargs['name'] == 'av_classifier' and node.kwargs['namespace'] == ''
    params_file, overrides = node.kwargs['parameters']
    assert_params_file(params_file, 'av_classifier')
    assert Path(params_file).name == 'robot.yaml'
    # defaults are the node's / params file's: launch only disables the node's own autostart
    assert overrides == {'autostart': False}
    assert node.kwargs['remappings'] == [('image', 'image'), ('image/compressed', 'image/compressed'),
                                         ('audio', 'audio')]

    # autostart: configure is emitted at start, activate once the node reports 'inactive'
    (configure,) = _of(actions, 'EmitEvent')
    change = configure.kwargs['event']
    assert change.kwargs['lifecycle_node_matcher'] == ('matches', node)
    from lifecycle_msgs.msg import Transition
    assert change.kwargs['transition_id'] == Transition.TRANSITION_CONFIGURE
    (on_transition,) = handlers(actions, 'OnStateTransition')
    assert on_transition.kwargs['target_lifecycle_node'] is node
    # only configuring -> inactive, and only once: deactivating -> inactive (an external
    # `ros2 lifecycle set ... deactivate`) must not re-activate the node
    assert (on_transition.kwargs['start_state'], on_transition.kwargs['goal_state']) == ('configuring', 'inactive')
    assert on_transition.kwargs['handle_once'] is True
    (activate,) = on_transition.kwargs['entities']
    assert activate.kwargs['event'].kwargs['transition_id'] == Transition.TRANSITION_ACTIVATE
    assert_shuts_down_on_exit(actions, node)


def test_robot_launch_overrides(fake_launch):
    entities = load_launch_file(LAUNCH_DIR / 'robot.launch.py').generate_launch_description().entities
    conf = {**declared_defaults(entities), 'namespace': 'robot1', 'image_topic': '/camera/image_raw',
            'audio_topic': '/mic/audio', 'model_card': '/models/x/card.yaml', 'backend': 'onnxruntime',
            'autostart': 'false'}
    actions = expand(entities, conf)
    (node,) = _of(actions, 'FakeLifecycleNode')
    assert node.kwargs['namespace'] == 'robot1'
    assert_section_applies(node.kwargs['parameters'][0], 'robot1', 'av_classifier')
    assert node.kwargs['parameters'][1] == {'model.card': '/models/x/card.yaml', 'backend.name': 'onnxruntime',
                                            'autostart': False}
    assert node.kwargs['remappings'] == [('image', '/camera/image_raw'),
                                         ('image/compressed', '/camera/image_raw/compressed'),
                                         ('audio', '/mic/audio')]
    assert not _of(actions, 'EmitEvent') and not handlers(actions, 'OnStateTransition')
    assert_shuts_down_on_exit(actions, node)          # with or without autostart


def test_robot_launch_remaps_every_input_of_the_node(fake_launch):
    """Each topic the node subscribes to (raw or compressed image, audio) has a remap, so `image_topic:=`
    moves the compressed subscription too (a remap rule matches whole names only)."""
    from av_snn_ros.ros import classifier_node
    module = load_launch_file(LAUNCH_DIR / 'robot.launch.py')
    remaps = dict(module.remappings('/camera/image_raw', '/mic/audio'))
    assert remaps == {classifier_node.IMAGE_TOPIC: '/camera/image_raw',
                      classifier_node.COMPRESSED_IMAGE_TOPIC: '/camera/image_raw/compressed',
                      classifier_node.AUDIO_TOPIC: '/mic/audio'}


@pytest.mark.parametrize('filename', LAUNCH_FILES)
def test_every_declared_argument_changes_the_launch(filename, fake_launch):
    """An argument `ros2 launch -s` advertises (the file's own and its includes') must change what is
    launched when given a different value; an ignored one is a lie in the argument list."""
    entities = load_launch_file(LAUNCH_DIR / filename).generate_launch_description().entities
    advertised = declared_defaults(entities)
    for include in _of(entities, 'IncludeLaunchDescription'):
        child = load_launch_file(Path(include.args[0].args[0])).generate_launch_description()
        advertised = {**declared_defaults(child.entities), **advertised}
    advertised = {k: '/bags/demo' if v is None else v for k, v in advertised.items()}   # required ones
    before = describe(expand(entities, advertised), advertised)
    for name, default in advertised.items():
        changed = {**advertised, name: 'false' if default == 'true' else f'/changed_{name}'}
        after = describe(expand(entities, changed), changed)
        assert after != before, f'{filename}: argument {name!r} is declared but changes nothing'


def test_replay_launch(fake_launch):
    entities = load_launch_file(LAUNCH_DIR / 'replay.launch.py').generate_launch_description().entities
    defaults = declared_defaults(entities)
    assert defaults['bag'] is None                                   # required argument
    actions = expand(entities, {**defaults, 'bag': '/bags/demo'})
    (node,) = _of(actions, 'FakeLifecycleNode')
    assert_valid_node(node, console_scripts())
    assert_params_file(node.kwargs['parameters'][0], 'av_classifier')
    assert Path(node.kwargs['parameters'][0]).name == 'replay.yaml'
    assert _of(actions, 'EmitEvent'), 'the classifier must be configured by launch'
    (play_handler,) = [h for h in handlers(actions, 'OnStateTransition') if h.kwargs['goal_state'] == 'active']
    # an action runs once: a second activation (deactivate + activate) must not execute it again
    assert play_handler.kwargs['handle_once'] is True
    (play,) = play_handler.kwargs['entities']
    cmd = [resolve(c, {'bag': '/bags/demo', 'rate': defaults['rate']}) for c in play.kwargs['cmd']]
    assert cmd == ['ros2', 'bag', 'play', '/bags/demo', '--rate', '1.0', '--clock']
    assert_shuts_down_on_exit(actions, play)           # the launch ends with the bag
    assert_shuts_down_on_exit(actions, node)


def test_demo_launch(fake_launch):
    entities = load_launch_file(LAUNCH_DIR / 'demo.launch.py').generate_launch_description().entities
    conf = {**declared_defaults(entities), 'namespace': 'demo'}
    actions = expand(entities, conf)
    scripts = console_scripts()
    (classifier,) = _of(actions, 'FakeLifecycleNode')
    assert_valid_node(classifier, scripts)
    assert_params_file(classifier.kwargs['parameters'][0], 'av_classifier')
    assert Path(classifier.kwargs['parameters'][0]).name == 'demo.yaml'
    assert _of(actions, 'EmitEvent'), 'the classifier must be configured by launch'
    sensors = {n.kwargs['executable']: n for n in _of(actions, 'Node')}
    assert set(sensors) == {'microphone_node', 'camera_node'}
    for node in sensors.values():
        assert_valid_node(node, scripts)
        (params,) = [resolve(p, conf) for p in node.kwargs['parameters']]
        assert_params_file(params, node.kwargs['name'])           # the driver has its own section
        assert resolve(node.kwargs['namespace'], conf) == classifier.kwargs['namespace'] == 'demo'
        assert_section_applies(params, 'demo', node.kwargs['name'])
    assert_section_applies(classifier.kwargs['parameters'][0], 'demo', 'av_classifier')
    # the drivers publish (relative) 'audio' and 'image', where the classifier listens
    from av_snn_ros.ros import camera_node, microphone_node
    assert sensors['microphone_node'].kwargs['name'] == microphone_node.NODE_NAME
    assert sensors['camera_node'].kwargs['name'] == camera_node.NODE_NAME
    remaps = dict(classifier.kwargs['remappings'])
    assert remaps == {'audio': microphone_node.AUDIO_TOPIC, 'image': camera_node.IMAGE_TOPIC,
                      'image/compressed': camera_node.COMPRESSED_IMAGE_TOPIC}
    # the demo needs both sensors: a driver that exits ends the launch
    for node in sensors.values():
        assert_shuts_down_on_exit(actions, node)


def test_demo_launch_topics_connect_drivers_and_classifier(fake_launch):
    """`image_topic:=` / `audio_topic:=` move the drivers' outputs and the classifier's inputs together."""
    from av_snn_ros.ros import camera_node, microphone_node
    entities = load_launch_file(LAUNCH_DIR / 'demo.launch.py').generate_launch_description().entities
    conf = {**declared_defaults(entities), 'image_topic': '/cam/image_raw', 'audio_topic': '/mic/audio'}
    actions = expand(entities, conf)
    (classifier,) = _of(actions, 'FakeLifecycleNode')
    sensors = {n.kwargs['executable']: n for n in _of(actions, 'Node')}
    inputs = dict(classifier.kwargs['remappings'])
    published = {frm: resolve(to, conf) for node in sensors.values() for frm, to in node.kwargs['remappings']}
    assert published[microphone_node.AUDIO_TOPIC] == inputs['audio'] == '/mic/audio'
    assert published[camera_node.IMAGE_TOPIC] == inputs['image'] == '/cam/image_raw'
    assert published[camera_node.COMPRESSED_IMAGE_TOPIC] == inputs['image/compressed'] == '/cam/image_raw/compressed'


@pytest.mark.parametrize('node_name', ['av_classifier', 'camera', 'microphone'])
def test_every_declared_parameter_is_documented(node_name):
    # docs/runtime.md is the parameter reference robot integrators read; a new parameter must land there
    text = (REPO / 'docs' / 'runtime.md').read_text()
    missing = sorted(name for name in declared_parameters(node_name) if f'`{name}`' not in text)
    assert not missing, f'docs/runtime.md does not document {node_name} parameters {missing}'
