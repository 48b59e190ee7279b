"""Start the audio-visual classifier on a robot (lifecycle node, configured and activated by launch).

    ros2 launch av_snn_ros robot.launch.py image_topic:=/camera/image_raw audio_topic:=/mic/audio

Arguments:
    params_file   ROS parameter file (default: share/av_snn_ros/config/robot.yaml)
    namespace     namespace of the classifier node
    image_topic   camera topic (sensor_msgs/Image) the node's ``image`` input is remapped to; its
                  ``image/compressed`` input (``input.compressed: true``) goes to ``<image_topic>/compressed``,
                  image_transport's name for the same camera's JPEG stream
    audio_topic   microphone topic (av_snn_msgs/AudioChunk) the node's ``audio`` input is remapped to
    model_card    model card path; empty keeps the params file's / node's default
    backend       inference backend (auto, tensorrt, onnxruntime, torch); empty keeps the default
    autostart     true: launch drives configure -> activate once, at start-up; false: leave the node
                  unconfigured. Later transitions (``ros2 lifecycle set``, a lifecycle manager) are left
                  alone: launch never re-activates a node that was deactivated from outside.
    log_level     ROS log level of the node

The launch ends when the classifier process exits (crash, shutdown transition, ``av_classifier_node``
returning after a failed start), instead of idling with nothing left to launch.

Parameter defaults live in the node and the params file, never here: ``model_card`` and ``backend``
only override when given. ``launch``/``launch_ros`` are imported inside ``generate_launch_description``
so the file can be inspected without a ROS installation.
"""
from pathlib import Path

PACKAGE = 'av_snn_ros'
EXECUTABLE = 'av_classifier_node'
NODE_NAME = 'av_classifier'
# Installed, this file sits in share/av_snn_ros/launch; in a checkout, in <repo>/launch.
SHARE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS_FILE = SHARE_DIR / 'config' / 'robot.yaml'


#: suffix image_transport gives a camera's compressed stream (``<image topic>/compressed``)
COMPRESSED_SUFFIX = '/compressed'


def remappings(image_topic: str, audio_topic: str) -> list[tuple[str, str]]:
    """The classifier's input remaps: ``image`` and, for ``input.compressed``, ``image/compressed``.

    A remap rule matches a whole topic name, so ``image:=X`` alone leaves ``image/compressed`` where it was.
    """
    # the node's own (relative) input names; tests/test_launch_files.py checks them against the node
    return [('image', image_topic), ('image/compressed', image_topic.rstrip('/') + COMPRESSED_SUFFIX),
            ('audio', audio_topic)]


def _classifier_actions(context, default_params_file=DEFAULT_PARAMS_FILE):
    """Build the lifecycle node, its one-time configure/activate events and the exit handler from the
    resolved arguments."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.events import matches_action
    from launch_ros.actions import LifecycleNode
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    from av_snn_ros.ros.launch_support import shutdown_when_exited

    def arg(name):
        return context.launch_configurations.get(name, '')

    overrides = {}
    if arg('model_card'):
        overrides['model.card'] = arg('model_card')
    if arg('backend'):
        overrides['backend.name'] = arg('backend')
    autostart = arg('autostart').lower() in ('true', '1', 'yes')
    # launch owns the transitions, so the node must not also start itself
    overrides['autostart'] = False

    node = LifecycleNode(
        package=PACKAGE, executable=EXECUTABLE, name=NODE_NAME, namespace=arg('namespace'),
        parameters=[arg('params_file') or str(default_params_file), overrides],
        remappings=remappings(arg('image_topic'), arg('audio_topic')),
        ros_arguments=['--log-level', arg('log_level')],
        output='screen',
    )
    actions = [node, shutdown_when_exited(node, f'{EXECUTABLE} exited')]
    if autostart:
        def change_state(transition_id):
            return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                               transition_id=transition_id))
        actions += [
            # only the configure that launch emits, once: `deactivating -> inactive` (ros2 lifecycle set
            # ... deactivate) must not trigger a re-activation
            RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=node, start_state='configuring', goal_state='inactive',
                entities=[change_state(Transition.TRANSITION_ACTIVATE)], handle_once=True)),
            change_state(Transition.TRANSITION_CONFIGURE),
        ]
    return actions


def declare_arguments(default_params_file=DEFAULT_PARAMS_FILE):
    """The launch arguments above (shared by replay.launch.py and demo.launch.py through includes)."""
    from launch.actions import DeclareLaunchArgument

    return [
        DeclareLaunchArgument('params_file', default_value=str(default_params_file),
                              description='ROS parameter file of the classifier'),
        DeclareLaunchArgument('namespace', default_value='', description='classifier namespace'),
        DeclareLaunchArgument('image_topic', default_value='image', description='camera topic'),
        DeclareLaunchArgument('audio_topic', default_value='audio', description='microphone topic'),
        DeclareLaunchArgument('model_card', default_value='', description='model card (empty: default)'),
        DeclareLaunchArgument('backend', default_value='', description='backend (empty: default)'),
        DeclareLaunchArgument('autostart', default_value='true', choices=['true', 'false'],
                              description='configure and activate the node from launch'),
        DeclareLaunchArgument('log_level', default_value='info', description='node log level'),
    ]


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import OpaqueFunction

    return LaunchDescription([*declare_arguments(), OpaqueFunction(function=_classifier_actions)])
